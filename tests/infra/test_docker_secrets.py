"""The docker target's credentials: files in /run/secrets, none in a container's environment.

Every credential the program can be given is set, in dev and in prod, so that each of them (the
passwords, the URLs that carry one, Flower's basic auth, the initial API key, the consoles' web
configuration, the alert webhook, the TLS certificate and key) has a container it could leak into.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest

from infra.config import DEV_ONLY_POSTGRES_PASSWORD
from infra.spec import app_role_password
from infra.spec.monitoring import internal_password, web_config
from infra.targets.docker_migration import MIGRATION_RUN_LABEL
from infra.targets.docker_secrets import SECRETS_ROLE_SUFFIX, UPLOAD_MODE
from rehearsal.runner import ProgramRun, Registration, container_env, container_label
from tests.infra.pulumi_mocks import run_program, without_secrets
from tests.infra.stacks import (
    API_KEY_SECRETS,
    PROD_SECRETS,
    TLS_SECRETS,
    WEBHOOK_SECRETS,
    is_secrets_container,
    mounted_files,
    role_containers,
    secrets_container_of,
    stack_file_config,
    uploaded_files,
)

ALL_SECRETS: Mapping[str, str] = {
    **PROD_SECRETS,
    **WEBHOOK_SECRETS,
    **API_KEY_SECRETS,
    **TLS_SECRETS,
}
STACKS = ["dev", "prod"]
ROLE_LABEL = "com.taskstack.role"


def _run(stack: str, target: str = "docker", **secrets: str) -> ProgramRun:
    # Monitoring on in dev too: its consoles' web configuration and the webhook are credentials.
    # prod with a repository host: its TLS files are credentials too (and a prod swarm needs it).
    config = {**stack_file_config(stack), "target": target, "monitoring": "true"}
    if stack == "prod":
        config["backupRepository"] = "repository-host"
    return run_program(config, stack=stack, secrets={**ALL_SECRETS, **secrets})


@pytest.fixture(scope="module", params=STACKS)
def run(request: pytest.FixtureRequest) -> ProgramRun:
    return _run(str(request.param))


def _credentials() -> dict[str, str]:
    """Every credential's plain value (or a part only a credential holds), by a name."""
    auth = ALL_SECRETS["flowerBasicAuth"]
    admin = ALL_SECRETS["postgresPassword"]
    values = {
        "admin password": admin,
        "app password": app_role_password(admin, "taskstack"),
        "redis password": ALL_SECRETS["redisPassword"],
        "flower password": auth.split(":", 1)[1],
        "console internal password": internal_password(auth),
        "console web config": web_config(auth),
        "initial API key": ALL_SECRETS["initialApiKey"],
        "webhook": ALL_SECRETS["alertWebhookUrl"],
    }
    for key in ("tlsCertificate", "tlsKey"):
        values[key] = ALL_SECRETS[key].splitlines()[1]
    assert DEV_ONLY_POSTGRES_PASSWORD not in values.values()
    return values


def _role(container: Registration) -> str:
    return str(container_label(container, ROLE_LABEL))


def test_no_container_environment_holds_a_credential(run: ProgramRun) -> None:
    credentials = _credentials()
    containers = list(run.containers())
    assert len(containers) > len(role_containers(run))  # the secrets containers are there
    for container in containers:
        env = json.dumps(container_env(container))
        leaked = sorted(name for name, value in credentials.items() if value in env)
        assert not leaked, (container.name, leaked)


def test_every_credential_reaches_some_container_as_a_file(run: ProgramRun) -> None:
    files = "\n".join(
        text for c in role_containers(run) for text in uploaded_files(run, c).values()
    )
    missing = sorted(name for name, value in _credentials().items() if value not in files)
    assert not missing


@pytest.mark.parametrize("stack", STACKS)
def test_each_role_gets_exactly_the_files_swarm_mounts(stack: str) -> None:
    docker_run, swarm_run = _run(stack), _run(stack, target="swarm")
    roles = {_role(c) for c in role_containers(docker_run)}
    for role in roles:
        on_swarm = {
            f"/run/secrets/{name}": text for name, text in mounted_files(swarm_run, role).items()
        }
        for container in docker_run.role(role):
            assert uploaded_files(docker_run, container) == on_swarm, container.name


def test_uploads_are_secret_and_read_only_files(run: ProgramRun) -> None:
    secrets_containers = [c for c in run.containers() if is_secrets_container(c)]
    assert secrets_containers
    for secrets in secrets_containers:
        uploads: list[dict[str, Any]] = secrets.plain["uploads"]
        assert uploads, secrets.name
        for upload in uploads:
            assert upload["file"].startswith("/run/secrets/")
            assert upload["permissions"] == UPLOAD_MODE
        # The content is a secret as registered: nothing of it in the plain view of the inputs.
        visible = json.dumps(without_secrets(secrets.inputs))
        assert "[secret]" in visible, secrets.name
        for name, value in _credentials().items():
            assert value not in visible, (secrets.name, name)


def test_each_copy_mounts_its_own_secrets_volume_read_only(run: ProgramRun) -> None:
    prod = any(c.plain.get("readOnly") for c in role_containers(run))
    seen: set[str] = set()
    for container in role_containers(run):
        secrets = secrets_container_of(run, container)
        if secrets is None:
            assert not container.plain.get("volumes"), container.name
            continue
        assert secrets.name == f"{container.name}-secrets"
        assert secrets.name not in seen  # one per copy
        seen.add(secrets.name)
        # Created, never started: its root filesystem takes the uploads (the copy's cannot).
        assert secrets.plain["start"] is False
        assert secrets.plain["mustRun"] is False
        assert secrets.plain["volumes"] == [{"containerPath": "/run/secrets"}]
        assert _role(secrets) == _role(container) + SECRETS_ROLE_SUFFIX
        # The copy keeps its own hardening: a read-only root filesystem in prod.
        assert container.plain["readOnly"] is prod, container.name
        assert secrets.urn in container.dependencies
    assert seen


def _migration_label(run: ProgramRun) -> str:
    labels = {i["label"]: i["value"] for i in run.named("migrate").plain["labels"]}
    return str(labels[MIGRATION_RUN_LABEL])


def test_a_changed_credential_reruns_the_migration_without_showing_it() -> None:
    first, again = _run("prod"), _run("prod")
    rotated = _run("prod", postgresPassword="pg-Rotated-0ff1ce-c0ffee")
    key = _migration_label(first).split(":")[0]
    assert _migration_label(again).split(":")[0] == key
    assert _migration_label(rotated).split(":")[0] != key
    for value in (*_credentials().values(), "pg-Rotated-0ff1ce-c0ffee"):
        assert value not in _migration_label(rotated)
    # A rotated credential is a new upload: the provider replaces the secrets container (upload
    # is ForceNew), whose new id replaces the copy that mounts it.
    old = uploaded_files(first, first.named("migrate"))
    new = uploaded_files(rotated, rotated.named("migrate"))
    assert old["/run/secrets/admin_database_url"] != new["/run/secrets/admin_database_url"]
