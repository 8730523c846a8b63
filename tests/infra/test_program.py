"""The program under mocks: what it registers for each stack, in which order, wired how."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pulumi
import pytest

from infra.spec import (
    APP_ROLES,
    MONITORING_ROLES,
    POSTGRES_ADMIN_USER,
    ROLES,
    app_role_password,
)
from infra.targets.docker_migration import MigrationFailedError
from tests.infra.pulumi_mocks import (
    AUTONAME_SUFFIX,
    CONTAINER,
    IMAGE,
    NETWORK,
    REMOTE_IMAGE,
    REPO_ROOT,
    VOLUME,
    ProgramMocks,
    ProgramRun,
    Registration,
    container_env,
    container_label,
    is_secret,
    run_program,
)
from tests.infra.stacks import (
    PROD_SECRETS,
    assert_second_run_identical,
    role_containers,
    run_stack,
    uploaded_files,
)

COMPONENTS = {
    ("taskstack:docker:Network", "network"),
    ("taskstack:docker:AppImage", "app"),
    ("taskstack:docker:Database", "postgres"),
    ("taskstack:docker:Cache", "redis"),
    ("taskstack:docker:Migration", "migrate"),
    ("taskstack:docker:Api", "api"),
    ("taskstack:docker:Workers", "worker"),
    ("taskstack:docker:Beat", "beat"),
    ("taskstack:docker:Flower", "flower"),
    ("taskstack:docker:Proxy", "proxy"),
}
SHARED = {
    (NETWORK, "app-network"),
    (NETWORK, "data-network"),
    (IMAGE, "app-image"),
    (REMOTE_IMAGE, "redis-image"),
    (REMOTE_IMAGE, "proxy-image"),
    (VOLUME, "postgres-data"),
    (VOLUME, "redis-data"),
    (VOLUME, "beat-data"),
}
# Workers and API copies: worker-<n>, api-<n>.
SINGLE_CONTAINERS = tuple(role for role in ROLES if role not in {"worker", "api"})
GATED = tuple(role for role in APP_ROLES if role != "migrate")  # behind the migration gate
GO_DURATION = re.compile(r"(?:[1-9][0-9]*h)?(?:[1-9][0-9]*m)?[0-9]+s")


MONITORING = {
    ("taskstack:docker:Prometheus", "prometheus"),
    ("taskstack:docker:Alertmanager", "alertmanager"),
    ("taskstack:docker:DatabaseExporter", "postgres-exporter"),
    ("taskstack:docker:CacheExporter", "redis-exporter"),
    *(
        (kind, f"{role}{suffix}")
        for role in MONITORING_ROLES
        for kind, suffix in ((CONTAINER, ""), (REMOTE_IMAGE, "-image"))
    ),
    (VOLUME, "prometheus-data"),
    (VOLUME, "alertmanager-data"),
}
# Without backups, PostgreSQL runs the pulled image.
PULLED_POSTGRES = {(REMOTE_IMAGE, "postgres-image")}
# With them (docs/backup.md): the built image, the backup role, the socket and repository
# volumes, declared by PostgreSQL's component (the first role to mount them).
BACKUP = {
    ("taskstack:docker:DatabaseImage", "database"),
    (IMAGE, "database-image"),
    ("taskstack:docker:Backup", "backup"),
    (CONTAINER, "backup"),
    (VOLUME, "postgres-postgres-run"),
    (VOLUME, "postgres-backup"),
}


def expected_resources(
    workers: int,
    api: int = 2,
    monitoring: bool = False,
    backup: bool = False,
    *,
    with_secrets: frozenset[str] = frozenset(),
) -> set[tuple[str, str]]:
    """`with_secrets`: the containers that have a secrets container `<name>-secrets` (the roles
    with credentials, infra/targets/docker_secrets.py)."""
    containers: set[tuple[str, str]] = {(CONTAINER, name) for name in SINGLE_CONTAINERS}
    containers |= {(CONTAINER, f"worker-{i}") for i in range(1, workers + 1)}
    containers |= {(CONTAINER, f"api-{i}") for i in range(1, api + 1)}
    containers |= {(CONTAINER, f"{name}-secrets") for name in with_secrets}
    optional = (MONITORING if monitoring else set()) | (BACKUP if backup else PULLED_POSTGRES)
    return COMPONENTS | SHARED | containers | optional


def registered(run: ProgramRun) -> set[tuple[str, str]]:
    pairs = [(r.type, r.name) for r in run.registrations]
    assert len(pairs) == len(set(pairs)), "a resource was registered twice"
    return set(pairs)


def urn_of(run: ProgramRun, name: str, type_: str = CONTAINER) -> str:
    return run.named(name, type_).urn


# --- The full resource set ------------------------------------------------------------------------


def test_dev_stack_registers_the_whole_stack(dev: ProgramRun) -> None:
    # Dev: no Redis password (so no file for Redis), no TLS; the URLs are files all the same.
    app = {"migrate", "api-1", "api-2", "worker-1", "worker-2", "beat", "flower"}
    with_secrets = frozenset({"postgres", *app})
    assert registered(dev) == expected_resources(workers=2, with_secrets=with_secrets)


def test_prod_stack_registers_the_whole_stack(prod: ProgramRun) -> None:
    app = {"migrate", "api-1", "api-2", "worker-1", "worker-2", "worker-3", "beat", "flower"}
    with_secrets = frozenset({"postgres", "redis", *app, *MONITORING_ROLES})
    assert registered(prod) == expected_resources(
        workers=3, monitoring=True, backup=True, with_secrets=with_secrets
    )


@pytest.mark.parametrize("replicas", [1, 4])
def test_worker_replicas_follow_config(replicas: int) -> None:
    run = run_stack("dev", workerReplicas=replicas)
    assert {c.name for c in run.role("worker")} == {f"worker-{i}" for i in range(1, replicas + 1)}


def test_each_concern_is_a_component_parenting_its_resources(prod: ProgramRun) -> None:
    components = {r.urn: r for r in prod.registrations if not r.custom}
    for resource in prod.registrations:
        if resource.custom:
            assert resource.parent in components, f"{resource.name} is not inside a component"
    parents = {r.name: components[r.parent].type for r in prod.registrations if r.custom}
    assert parents["postgres"] == "taskstack:docker:Database"
    assert parents["redis"] == "taskstack:docker:Cache"
    assert parents["migrate"] == "taskstack:docker:Migration"
    assert parents["worker-2"] == "taskstack:docker:Workers"
    assert parents["app-image"] == "taskstack:docker:AppImage"
    assert parents["data-network"] == "taskstack:docker:Network"


def test_the_program_runs_from_infra_as_pulumi_runs_it(dev: ProgramRun) -> None:
    # run_program chdirs into infra/ (Pulumi.yaml `main`) and runs it with runpy: the build context
    # and the bind mount must still resolve to the repository, not to the working directory.
    build = dev.named("app-image", IMAGE).plain["build"]
    assert Path(build["context"]) == REPO_ROOT
    assert Path(build["dockerfile"]) == REPO_ROOT / "Dockerfile"
    mounts = dev.named("api-1").plain["mounts"]
    assert {"type": "bind", "source": str(REPO_ROOT / "app"), "target": "/app/app"}.items() <= (
        next(m for m in mounts if m["type"] == "bind").items()
    )


# --- Health gating, from the dependencies the engine receives ------------------------------------


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_app_roles_wait_for_postgres_redis_and_the_migration(stack: str) -> None:
    run = run_stack(stack)
    upstream = {urn_of(run, "postgres"), urn_of(run, "redis"), urn_of(run, "migrate")}
    for role in GATED:
        for container in run.role(role):
            missing = upstream - container.dependencies
            assert not missing, f"{container.name} does not depend on {missing}"


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_migration_waits_for_postgres(stack: str) -> None:
    run = run_stack(stack)
    assert urn_of(run, "postgres") in run.named("migrate").dependencies


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_gated_services_are_healthchecked_and_waited_for(stack: str) -> None:
    run = run_stack(stack)
    for name in ("postgres", "redis", "api-1", "api-2", "worker-1", "proxy"):
        inputs = run.named(name).plain
        assert inputs["healthcheck"]["tests"], name
        assert inputs["wait"] is True, name
        assert inputs["waitTimeout"] > 0, name


def test_healthchecks_use_the_contracted_signals(dev: ProgramRun) -> None:
    assert "pg_isready" in dev.named("postgres").plain["healthcheck"]["tests"]
    assert "redis-cli ping" in " ".join(dev.named("redis").plain["healthcheck"]["tests"])
    api_check = " ".join(dev.named("api-1").plain["healthcheck"]["tests"])
    assert "/health/ready" in api_check
    assert "curl" not in api_check  # the image has none
    worker_check = dev.named("worker-1").plain["healthcheck"]["tests"]
    assert worker_check[0] == "CMD-SHELL"
    assert "find /tmp/celery-worker-heartbeat -mmin" in worker_check[1]
    assert "python" not in worker_check[1]


def test_healthcheck_durations_are_canonical_go_strings(prod: ProgramRun) -> None:
    # The provider reads durations back as Go strings; "1m" would read back as "1m0s", a diff.
    for container in role_containers(prod):
        check = container.plain.get("healthcheck")
        if not check:
            continue
        for key in ("interval", "timeout", "startPeriod"):
            assert GO_DURATION.fullmatch(check[key]), check[key]


def test_the_migration_is_a_one_shot_whose_output_is_kept(dev: ProgramRun) -> None:
    migrate = dev.named("migrate").plain
    assert migrate["command"] == ["alembic", "upgrade", "head"]
    assert migrate["mustRun"] is False
    assert migrate["attach"] is True
    assert migrate["logs"] is True
    assert migrate["restart"] == "no"
    assert "wait" not in migrate or migrate["wait"] is False


def test_a_failed_migration_fails_the_run_with_its_output() -> None:
    mocks = ProgramMocks(migration_exit_code=1, migration_logs="sqlalchemy.exc.ProgrammingError: x")
    with pytest.raises(MigrationFailedError, match="exited with code 1") as failure:
        run_program({"environment": "dev"}, stack="dev", mocks=mocks)
    assert "sqlalchemy.exc.ProgrammingError: x" in str(failure.value)


def test_nothing_that_needs_the_schema_is_registered_after_a_failed_migration() -> None:
    mocks = ProgramMocks(migration_exit_code=2, migration_logs="boom")
    recorded = RecordingMocks(mocks)
    with pytest.raises(Exception, match="boom"):
        run_program({"environment": "dev"}, stack="dev", mocks=recorded)
    containers = {name for typ, name in recorded.created if typ == CONTAINER}
    assert {"postgres", "redis", "migrate"} <= containers
    assert not containers & {"api-1", "beat", "flower", "worker-1", "proxy"}, containers


def test_a_successful_migration_lets_everything_register() -> None:
    recorded = RecordingMocks(ProgramMocks())
    run_program({"environment": "dev"}, stack="dev", mocks=recorded)
    containers = {name for typ, name in recorded.created if typ == CONTAINER}
    assert {"api-1", "api-2", "beat", "flower", "worker-1", "worker-2", "proxy"} <= containers


class RecordingMocks(ProgramMocks):
    """Notes every resource the engine was asked to create, even when the run fails later."""

    def __init__(self, inner: ProgramMocks) -> None:
        super().__init__(inner.migration_exit_code, inner.migration_logs)
        self.created: list[tuple[str, str]] = []

    def new_resource(self, args):  # type: ignore[no-untyped-def]
        self.created.append((args.typ, args.name))
        return super().new_resource(args)


# --- Wiring ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_database_urls_match_the_postgres_container(stack: str) -> None:
    """The app roles connect as the app's own role (its password derived from the administrator's);
    only the migration connects as the administrator PostgreSQL was initialised with."""
    run = run_stack(stack)
    postgres = run.named("postgres")
    pg_env = container_env(postgres)
    aliases = {
        alias for network in postgres.plain["networksAdvanced"] for alias in network["aliases"]
    }
    # The image reads the password from the file POSTGRES_PASSWORD_FILE names.
    admin_password = secret_settings(run, postgres)["postgres_password"]
    assert pg_env["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"  # noqa: S105
    assert pg_env["POSTGRES_USER"] == POSTGRES_ADMIN_USER
    urls = [
        (container, secret_settings(run, container)[variable], variable)
        for role in ("migrate", "api", "worker", "beat")
        for container in run.role(role)
        for variable in ("database_url", "admin_database_url")
        if variable in secret_settings(run, container)
    ]
    assert {variable for _, _, variable in urls} == {"database_url", "admin_database_url"}
    for container, value, variable in urls:
        url = urlsplit(value)
        assert url.scheme == "postgresql+psycopg"
        assert url.hostname in aliases
        assert url.port == 5432
        assert url.path == f"/{pg_env['POSTGRES_DB']}"
        if variable == "admin_database_url":
            assert (url.username, url.password) == (POSTGRES_ADMIN_USER, admin_password)
        else:
            assert url.username == "taskstack" != POSTGRES_ADMIN_USER
            assert url.password == app_role_password(admin_password, "taskstack")
            assert url.password != admin_password
        assert shares_network(container, postgres)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_broker_and_results_point_at_the_redis_container(stack: str) -> None:
    run = run_stack(stack)
    redis = run.named("redis")
    aliases = {alias for network in redis.plain["networksAdvanced"] for alias in network["aliases"]}
    password = PROD_SECRETS["redisPassword"] if stack == "prod" else None
    for role in ("api", "worker", "beat", "flower"):
        for container in run.role(role):
            files = secret_settings(run, container)
            for key in ("redis_url", "celery_broker_url", "celery_result_backend"):
                url = urlsplit(files[key])
                assert url.scheme == "redis"
                assert url.hostname in aliases
                assert url.port == 6379
                assert url.password == password, key
            assert shares_network(container, redis)
    if password:
        assert secret_settings(run, redis)["redis_password"] == password
        assert '--requirepass "$(cat /run/secrets/redis_password)"' in redis.plain["command"][-1]


def secret_settings(run: ProgramRun, container: Registration) -> dict[str, str]:
    """The container's secret files by name (what pydantic-settings reads from /run/secrets)."""
    return {
        path.removeprefix("/run/secrets/"): content
        for path, content in uploaded_files(run, container).items()
    }


def shares_network(a: Registration, b: Registration) -> bool:
    names = {n["name"] for n in a.plain["networksAdvanced"]}
    return bool(names & {n["name"] for n in b.plain["networksAdvanced"]})


def test_containers_run_the_built_image_by_id(prod: ProgramRun) -> None:
    image_id = prod.named("app-image", IMAGE).outputs["repoDigest"]
    # PostgreSQL with pgBackRest (docs/backup.md): built, and run by id like the app.
    postgres_id = prod.named("database-image", IMAGE).outputs["repoDigest"]
    for role in APP_ROLES:
        for container in prod.role(role):
            assert container.plain["image"] == image_id
    assert prod.named("postgres").plain["image"] == postgres_id
    assert prod.named("backup").plain["image"] == postgres_id


def test_app_image_is_built_locally_tagged_per_stack(prod: ProgramRun) -> None:
    image = prod.named("app-image", IMAGE).plain
    assert image["imageName"] == "taskstack-app:prod"
    assert image["skipPush"] is True
    assert image["build"]["platform"] == "linux/amd64"
    database = prod.named("database-image", IMAGE).plain
    assert database["imageName"] == "taskstack-app-postgres:prod"
    assert database["skipPush"] is True
    assert database["build"]["args"] == {"POSTGRES_IMAGE": "postgres:17"}
    assert database["build"]["context"].endswith("infra/postgres")
    for name in ("redis-image",):
        remote = prod.named(name, REMOTE_IMAGE).plain
        assert remote["keepLocally"] is True
        assert ":" in remote["name"]


def test_roles_run_their_contracted_commands() -> None:
    run = run_stack("prod", workerConcurrency=7, apiWorkers=3)
    assert run.named("api-1").plain["command"][:2] == ["uvicorn", "app.main:app"]
    assert run.named("worker-1").plain["command"][-1] == "--concurrency=7"
    assert run.named("beat").plain["command"][:4] == ["celery", "-A", "app.worker", "beat"]
    # Flower in prod: a shell that exports its basic auth from its file, then runs it.
    assert run.named("flower").plain["command"][-1].endswith("--max_tasks=5000 --port=5555")
    api = run.named("api-1").plain["command"]
    assert api[api.index("--workers") + 1] == "3"


def test_workers_stop_gracefully(prod: ProgramRun) -> None:
    for worker in prod.role("worker"):
        inputs = worker.plain
        assert inputs["stopSignal"] == "SIGTERM"
        assert inputs["stopTimeout"] == 300  # Pulumi.prod.yaml
        assert inputs["destroyGraceSeconds"] == 300


def test_beat_is_single_with_a_writable_schedule(prod: ProgramRun) -> None:
    (beat,) = prod.role("beat")
    schedule = container_env(beat)["BEAT_SCHEDULE_PATH"]
    mounts = beat.plain["mounts"]
    assert any(m["type"] == "volume" and schedule.startswith(m["target"] + "/") for m in mounts)


def test_every_container_has_restart_logs_labels_user_and_init(prod: ProgramRun) -> None:
    for container in role_containers(prod):
        inputs = container.plain
        assert inputs["restart"] in {"unless-stopped", "no"}, container.name
        assert inputs["logDriver"] == "json-file"
        assert inputs["logOpts"] == {"max-size": "10m", "max-file": "3"}
        assert container_label(container, "com.taskstack.stack") == "prod"
        assert container_label(container, "com.taskstack.managed-by") == "pulumi"
        assert container_label(container, "com.taskstack.role")
        assert inputs["init"] is True
        assert not inputs["user"].startswith(("0", "root"))


def test_networks_and_volumes_carry_the_labels(prod: ProgramRun) -> None:
    for resource in prod.of_type(NETWORK) + prod.of_type(VOLUME):
        labels = {item["label"]: item["value"] for item in resource.plain["labels"]}
        assert labels["com.taskstack.stack"] == "prod"
        assert labels["com.taskstack.managed-by"] == "pulumi"


def test_containers_are_replaced_for_changes_the_provider_ignores(prod: ProgramRun) -> None:
    for container in role_containers(prod):
        assert set(container.replace_on_changes) >= {"healthcheck", "tmpfs", "init"}


def test_api_and_workers_are_replaced_side_by_side_the_rest_first_deleted(prod: ProgramRun) -> None:
    # No name (auto-named: a replacement gets a new one) and no published port: the replacement is
    # created before the old container is deleted. The provider's own default (delete first) is
    # overridden explicitly; everything with a fixed name or port keeps it, explicitly too.
    for container in role_containers(prod):
        role = container_label(container, "com.taskstack.role")
        side_by_side = role in {"api", "worker"}
        assert container.delete_before_replace_defined, container.name
        assert container.delete_before_replace is not side_by_side, container.name
        assert ("name" not in container.plain) is side_by_side, container.name
        if side_by_side:
            assert not container.plain.get("ports"), container.name


def test_api_copies_start_one_after_the_other(prod: ProgramRun) -> None:
    assert urn_of(prod, "api-1") in prod.named("api-2").dependencies
    assert urn_of(prod, "worker-1") not in prod.named("worker-2").dependencies


def test_containers_take_the_network_name_output(prod: ProgramRun) -> None:
    # Passing the Output (not a literal) makes each container depend on its networks, so Pulumi
    # deletes containers before networks.
    network_urns = {r.urn for r in prod.of_type(NETWORK)}
    for container in role_containers(prod):
        assert container.property_dependencies["networksAdvanced"] & network_urns


# --- Outputs --------------------------------------------------------------------------------------


def test_stack_outputs(prod: ProgramRun) -> None:
    outputs = prod.stack_outputs
    assert outputs["apiUrl"] == "http://127.0.0.1:8000"
    assert outputs["docsUrl"] == "http://127.0.0.1:8000/docs"
    assert outputs["flowerUrl"] == "http://127.0.0.1:5555"
    assert outputs["imageName"] == "taskstack-app:prod"
    assert outputs["containerNames"]["worker"] == [
        f"worker-{n}{AUTONAME_SUFFIX}" for n in (1, 2, 3)
    ]
    assert outputs["containerNames"]["api"] == [f"api-{n}{AUTONAME_SUFFIX}" for n in (1, 2)]
    assert outputs["containerNames"]["proxy"] == ["taskstack-prod-proxy"]
    for key in ("databaseUrl", "redisUrl"):
        assert is_secret(outputs[key]), key
    # The URL the app connects with: the app's role and its derived password.
    app_password = app_role_password(PROD_SECRETS["postgresPassword"], "taskstack")
    assert f"taskstack:{app_password}@" in outputs["databaseUrl"]["value"]


def test_a_second_run_registers_identical_inputs() -> None:
    assert_second_run_identical(lambda mocks: run_stack("prod", mocks=mocks))


# --- Components: one per concern, named after it --------------------------------------------------

# Component name -> type, on both targets (`taskstack:<target>:<type>`). A child's URN holds its
# parent's type: a changed type would replace every resource under it.
COMPONENT_TYPES = {
    "network": "Network",
    "app": "AppImage",
    "postgres": "Database",
    "redis": "Cache",
    "migrate": "Migration",
    "api": "Api",
    "worker": "Workers",
    "beat": "Beat",
    "flower": "Flower",
    "proxy": "Proxy",
}


@pytest.mark.parametrize("target", ["docker", "swarm"])
def test_one_component_per_concern_under_its_own_name_and_type(
    target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    aliases: dict[str, list[Any]] = {}
    original = pulumi.ComponentResource.__init__

    def recording(self, t, name, props=None, opts=None, remote=False, package_ref=None):  # type: ignore[no-untyped-def]
        if t.startswith("taskstack:"):
            aliases[name] = list((opts.aliases if opts else None) or [])
        original(self, t, name, props, opts, remote, package_ref)

    monkeypatch.setattr(pulumi.ComponentResource, "__init__", recording)
    run = run_stack("dev", target=target)
    expected = COMPONENT_TYPES | ({"secrets": "Secrets"} if target == "swarm" else {})
    components = {r.name: r.type for r in run.registrations if not r.custom}
    assert components == {name: f"taskstack:{target}:{t}" for name, t in expected.items()}
    # No stack was deployed under other names: no component carries an alias.
    assert set(aliases) == set(expected)
    assert not any(aliases.values()), aliases
    # Every resource is a child of one of them (the stack reference aside, a read).
    urns = {r.urn for r in run.registrations if not r.custom}
    assert all(r.parent in urns for r in run.registrations if r.custom), target


def test_component_options_reach_every_child(dev: ProgramRun) -> None:
    # The ordering a target derives from `depends_on` is passed as the component's options and
    # merged into its children: each worker container waits for the migration's container.
    migrate = urn_of(dev, "migrate")
    components = {r.urn: r for r in dev.registrations if not r.custom}
    workers = next(u for u, r in components.items() if r.type == "taskstack:docker:Workers")
    assert migrate in components[workers].dependencies
    for container in dev.role("worker"):
        assert container.parent == workers
        assert migrate in container.dependencies


def test_flower_sees_workers_by_role_and_copy(dev: ProgramRun) -> None:
    names = sorted(container_env(c)["CELERY_WORKER_HOSTNAME"] for c in dev.role("worker"))
    assert names == ["worker-1@%h", "worker-2@%h"]
