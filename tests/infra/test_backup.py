"""Archiving, backups and the declared restore (docs/backup.md), asserted through mocks."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from infra.config import StackConfigError
from tests.infra.pulumi_mocks import (
    IMAGE,
    REMOTE_IMAGE,
    VOLUME,
    ProgramRun,
    container_env,
    run_program,
    without_secrets,
)
from tests.infra.stacks import (
    PROD_SECRETS,
    run_stack,
    service,
    stack_file_config,
    swarm,
    uploaded_files,
)

PGDATA = "/var/lib/postgresql/data"
SOCKET_DIR = "/var/run/postgresql"
REPOSITORY = "/var/lib/pgbackrest"
TLS_KEY = "/tmp/pgbackrest-tls.key"  # noqa: S108 - the container's private tmpfs


def mounts(run: ProgramRun, name: str) -> dict[str, dict[str, object]]:
    return {m["target"]: m for m in run.named(name).plain["mounts"]}


def test_postgres_archives_each_segment_within_the_timeout(prod: ProgramRun) -> None:
    command = prod.named("postgres").plain["command"]
    assert command[0] == "postgres"
    for setting in (
        "archive_mode=on",
        "archive_command=pgbackrest archive-push %p",
        "archive_timeout=50",
    ):
        assert setting in command
    env = container_env(prod.named("postgres"))
    assert env["PGBACKREST_STANZA"] == "taskstack"
    assert env["PGBACKREST_REPO1_PATH"] == REPOSITORY
    assert "RESTORE_TARGET" not in env


def test_the_backup_role_shares_the_data_the_socket_and_the_repository(prod: ProgramRun) -> None:
    postgres, backup = mounts(prod, "postgres"), mounts(prod, "backup")
    for target in (PGDATA, SOCKET_DIR, REPOSITORY):
        assert backup[target]["source"] == postgres[target]["source"], target
        assert backup[target]["type"] == "volume"
    # Declared once, by PostgreSQL's component; the data volume keeps its resource name.
    volumes = {r.name: r.plain["name"] for r in prod.of_type(VOLUME)}
    assert volumes["postgres-data"] == "taskstack-prod-postgres-data"
    assert volumes["postgres-backup"] == "taskstack-prod-backup-data"
    assert volumes["postgres-postgres-run"] == "taskstack-prod-postgres-run-data"
    env = container_env(prod.named("backup"))
    assert env["BACKUP_FULL_INTERVAL_HOURS"] == "24"
    assert env["BACKUP_DIFF_INTERVAL_HOURS"] == "4"
    assert env["PGBACKREST_REPO1_RETENTION_FULL"] == "7"
    assert env["APP_SCHEMA"] == "taskstack"
    assert prod.named("backup").plain["entrypoints"] == ["backup-schedule.sh"]
    assert prod.named("backup").plain["readOnly"] is True


def test_the_repository_may_be_a_host_directory_on_another_disk() -> None:
    run = run_stack(
        "prod", backupRepository="host-path", backupRepositoryPath="/mnt/backups/taskstack"
    )
    for name in ("postgres", "backup"):
        mount = mounts(run, name)[REPOSITORY]
        assert (mount["type"], mount["source"]) == ("bind", "/mnt/backups/taskstack"), name
    assert "postgres-backup" not in {r.name for r in run.of_type(VOLUME)}


def test_without_backups_postgres_runs_the_pulled_image_and_no_backup_role() -> None:
    run = run_stack("prod", backup="false")
    assert not [r for r in run.of_type(IMAGE) if r.name == "database-image"]
    pulled = run.named("postgres-image", REMOTE_IMAGE)
    assert pulled.plain["name"] == "postgres:17"
    assert run.named("postgres").plain["image"] == pulled.outputs["imageId"]
    assert "backup" not in {r.name for r in run.containers()}
    assert SOCKET_DIR in run.named("postgres").plain["tmpfs"]
    assert SOCKET_DIR not in mounts(run, "postgres")


def test_a_restore_is_declared_and_waits_for_the_promoted_server() -> None:
    run = run_stack("prod", restoreTarget="2026-12-07T10:00:00+00:00", restoreTimeoutMinutes=90)
    postgres = run.named("postgres").plain
    assert container_env(run.named("postgres"))["RESTORE_TARGET"] == "2026-12-07 10:00:00+00:00"
    # Nothing that depends on PostgreSQL starts until the restore and its replay are over.
    assert postgres["healthcheck"]["startPeriod"] == "1h30m0s"
    assert postgres["waitTimeout"] == 90 * 60 + 60


def test_a_new_volume_generation_gives_postgres_a_fresh_volume() -> None:
    run = run_stack("prod", postgresVolumeGeneration=2, restoreTarget="latest")
    volumes = {r.name: r.plain["name"] for r in run.of_type(VOLUME)}
    assert volumes["postgres-data"] == "taskstack-prod-postgres-data-g2"
    assert mounts(run, "backup")[PGDATA]["source"] == "taskstack-prod-postgres-data-g2"


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"backup": "false", "restoreTarget": "latest"}, "taskstack:restoreTarget: a restore"),
        ({"backupRepository": "host-path"}, "taskstack:backupRepositoryPath: backupRepository"),
        ({"walArchiveTimeoutSeconds": "300"}, "within 60 s of a commit"),
        ({"restoreTarget": "2026-12-07 10:00:00"}, "a time with its offset"),
        ({"backupRepositoryPath": "backups/here"}, "absolute host path"),
    ],
)
def test_bad_backup_settings_are_named_with_their_fix(
    config: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(StackConfigError) as failure:
        run_stack("prod", **config)
    assert fragment in str(failure.value)
    assert "fix: pulumi config set taskstack:" in str(failure.value)


def test_a_dev_stack_may_archive_for_longer() -> None:
    run = run_stack("dev", backup="true", walArchiveTimeoutSeconds=300)
    assert "archive_timeout=300" in run.named("postgres").plain["command"]


def test_on_swarm_the_repository_host_runs_on_another_node_than_the_database() -> None:
    run = swarm("prod")
    constraints = {
        role: service(run, role)["taskSpec"]["placement"]["constraints"]
        for role in ("postgres", "backup", "repository")
    }
    assert constraints["backup"] == constraints["postgres"]
    assert constraints["backup"] == ["node.labels.taskstack.postgres==true"]
    assert constraints["repository"] == ["node.labels.taskstack.backup==true"]


# -- a repository host (backupRepository repository-host)


@pytest.fixture(scope="module")
def hosted() -> ProgramRun:
    return run_stack("prod", backupRepository="repository-host")


def test_with_a_repository_host_only_that_role_mounts_the_repository(hosted: ProgramRun) -> None:
    assert REPOSITORY in mounts(hosted, "repository")
    for name in ("postgres", "backup"):
        assert REPOSITORY not in mounts(hosted, name), name
    postgres, backup = mounts(hosted, "postgres"), mounts(hosted, "backup")
    for target in (PGDATA, SOCKET_DIR):
        assert backup[target]["source"] == postgres[target]["source"], target
    volumes = {r.name: r.plain["name"] for r in hosted.of_type(VOLUME)}
    assert volumes["repository-backup"] == "taskstack-prod-backup-data"


def test_postgres_pushes_to_and_restores_from_the_repository_host_over_tls(
    hosted: ProgramRun,
) -> None:
    env = container_env(hosted.named("postgres"))
    assert env["PGBACKREST_REPO1_HOST"] == "repository"
    assert env["PGBACKREST_REPO1_HOST_TYPE"] == "tls"
    assert env["PGBACKREST_REPO1_HOST_CERT_FILE"] == "/run/secrets/pgbackrest.crt"
    assert env["PGBACKREST_REPO1_HOST_KEY_FILE"] == env["TLS_KEY_FILE"] == TLS_KEY
    postgres = hosted.named("postgres").plain
    # The key is copied to the private /tmp first, then the image's own entrypoint runs.
    assert postgres["entrypoints"] == ["with-tls-key.sh", "restore-then-start.sh"]
    assert postgres["command"][0] == "postgres"


def test_a_restore_from_the_repository_host_keeps_the_tls_key_copy() -> None:
    # A restore's first start reads the repository host: the key must be copied for it too.
    run = run_stack("prod", backupRepository="repository-host", restoreTarget="latest")
    env = container_env(run.named("postgres"))
    assert env["RESTORE_TARGET"] == "latest"
    assert env["TLS_KEY_SOURCE"] == "/run/secrets/pgbackrest.key"
    assert env["TLS_KEY_FILE"] == env["PGBACKREST_REPO1_HOST_KEY_FILE"] == TLS_KEY
    assert run.named("postgres").plain["entrypoints"][0] == "with-tls-key.sh"


def test_the_repository_host_admits_postgres_and_takes_backups_through_the_backup_role(
    hosted: ProgramRun,
) -> None:
    repository = container_env(hosted.named("repository"))
    assert repository["PGBACKREST_TLS_SERVER_AUTH"] == "postgres=taskstack"
    assert repository["PGBACKREST_PG1_HOST"] == "backup"
    assert repository["PGBACKREST_PG1_HOST_TYPE"] == "tls"
    # The schedule reaches PostgreSQL over the network, its password in a file.
    assert repository["PGHOST"] == "postgres"
    assert repository["PGPASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert hosted.named("repository").plain["entrypoints"] == [
        "with-tls-key.sh",
        "backup-schedule.sh",
    ]
    backup = container_env(hosted.named("backup"))
    assert backup["PGBACKREST_TLS_SERVER_AUTH"] == "repository=taskstack"
    assert "PGBACKREST_REPO1_HOST" not in backup
    plain = hosted.named("backup").plain
    assert plain["entrypoints"] == ["with-tls-key.sh", "pgbackrest"]
    assert plain["command"] == ["server"]
    for name in ("backup", "repository"):
        check = hosted.named(name).plain["healthcheck"]["tests"]
        assert check[:3] == ["CMD", "pgbackrest", "server-ping"], name


def _tls(run: ProgramRun, name: str) -> dict[str, str]:
    files = uploaded_files(run, run.named(name))
    return {path.rsplit("/", 1)[1]: text for path, text in files.items()}


def test_each_tls_role_has_its_own_certificate_from_one_ca_and_its_key(
    hosted: ProgramRun,
) -> None:
    cas = set()
    for name in ("postgres", "backup", "repository"):
        files = _tls(hosted, name)
        ca = x509.load_pem_x509_certificate(files["pgbackrest-ca.crt"].encode())
        certificate = x509.load_pem_x509_certificate(files["pgbackrest.crt"].encode())
        key = serialization.load_pem_private_key(files["pgbackrest.key"].encode(), None)
        cas.add(ca.fingerprint(hashes.SHA256()))
        certificate.verify_directly_issued_by(ca)
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        assert names.value.get_values_for_type(x509.DNSName) == [name]
        assert key.public_key() == certificate.public_key(), name
    assert len(cas) == 1


def test_the_tls_files_are_the_same_on_every_up_and_secret(hosted: ProgramRun) -> None:
    again = run_stack("prod", backupRepository="repository-host")
    for name in ("postgres", "backup", "repository"):
        assert _tls(again, name) == _tls(hosted, name), name
    config = {**stack_file_config("prod"), "backupRepository": "repository-host"}
    rotated = {**PROD_SECRETS, "postgresPassword": "another-long-password-for-the-test"}
    other = run_program(config, stack="prod", secrets=rotated)
    assert _tls(other, "repository") != _tls(hosted, "repository")
    # Registered as secrets: no key or certificate in any plain input.
    key = _tls(hosted, "repository")["pgbackrest.key"].splitlines()[1]
    for resource in hosted.registrations:
        assert key not in json.dumps(without_secrets(resource.inputs)), resource.name
