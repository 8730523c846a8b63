"""The swarm target under mocks: the same stack description rendered as Swarm services.

Every run goes through `run_program` with `taskstack:target swarm` in the stack configuration, as
`pulumi config set taskstack:target swarm` would set it.
"""

from __future__ import annotations

import asyncio
import gc
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from app.config import Settings
from infra.config import DEV_ONLY_POSTGRES_PASSWORD
from infra.spec import (
    APP_ROLES,
    BACKUP_ROLES,
    MONITORING_ROLES,
    POSTGRES_ADMIN_USER,
    REPOSITORY_ROLES,
    ROLES,
    app_role_password,
)
from tests.infra.pulumi_mocks import (
    CONTAINER,
    IMAGE,
    NETWORK,
    REMOTE_IMAGE,
    SECRET,
    SERVICE,
    VOLUME,
    ProgramMocks,
    ProgramRun,
    is_secret,
    run_program,
    without_secrets,
)
from tests.infra.stacks import (
    PROD_SECRETS,
    assert_only_secret,
    assert_second_run_identical,
    container_spec,
    mounted_files,
    run_stack,
    secret_value,
    service,
    swarm,
)

GATED = tuple(role for role in APP_ROLES if role != "migrate")  # behind the migration gate
COMPONENTS = {
    ("taskstack:swarm:Network", "network"),
    ("taskstack:swarm:AppImage", "app"),
    ("taskstack:swarm:Secrets", "secrets"),
    ("taskstack:swarm:Database", "postgres"),
    ("taskstack:swarm:Cache", "redis"),
    ("taskstack:swarm:Migration", "migrate"),
    ("taskstack:swarm:Api", "api"),
    ("taskstack:swarm:Workers", "worker"),
    ("taskstack:swarm:Beat", "beat"),
    ("taskstack:swarm:Flower", "flower"),
}
# What the provider reads a service's durations back as (Go's Duration.String() through shortDur:
# "45s", "1m", "1m30s", "1h"): anything else is a diff on every `up`.
GO_DURATION = re.compile(r"(?:[1-9][0-9]*h)?(?:[1-9][0-9]*m)?(?:[1-9][0-9]*s)?|0s")
TMP = "/tmp"  # noqa: S108 - a path inside the containers, asserted on
MIGRATED_MARKER = f"{TMP}/taskstack-migrated"
PASSWORD_FILE_VARIABLE = "POSTGRES_PASSWORD_FILE"  # noqa: S105 - a variable name
BROKER_FILES = {"redis_url", "celery_broker_url", "celery_result_backend"}
# Each app role's connection files: only what it uses (tests/infra/test_credentials.py has the
# whole table).
CONNECTION_FILES = {
    "migrate": {"database_url", "admin_database_url"},
    "api": {"database_url", *BROKER_FILES},
    "worker": {"database_url", *BROKER_FILES},
    "beat": {"database_url", *BROKER_FILES},
    "flower": BROKER_FILES,
}
# Every variable that would carry a credential if it were passed in the environment.
CREDENTIAL_VARIABLES = {
    "DATABASE_URL",
    "ADMIN_DATABASE_URL",
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "CELERY_RESULT_BACKEND",
    "POSTGRES_PASSWORD",
    "REDISCLI_AUTH",
    "FLOWER_BASIC_AUTH",
}


@pytest.fixture(scope="module")
def dev() -> ProgramRun:
    return swarm("dev")


@pytest.fixture(scope="module")
def prod() -> ProgramRun:
    return swarm("prod")


# --- The full resource set ------------------------------------------------------------------------


MONITORING_COMPONENTS = {
    ("taskstack:swarm:Prometheus", "prometheus"),
    ("taskstack:swarm:Alertmanager", "alertmanager"),
    ("taskstack:swarm:DatabaseExporter", "postgres-exporter"),
    ("taskstack:swarm:CacheExporter", "redis-exporter"),
}


def expected(
    secret_keys: set[str], monitoring: bool = False, backup: bool = False
) -> set[tuple[str, str]]:
    resources = {
        (NETWORK, "app-network"),
        (NETWORK, "data-network"),
        (IMAGE, "app-image"),
    }
    backup_roles = (*BACKUP_ROLES, *REPOSITORY_ROLES) if backup else ()
    roles = (*ROLES, *(MONITORING_ROLES if monitoring else ()), *backup_roles)
    resources |= {(SERVICE, role) for role in roles}
    # PostgreSQL with pgBackRest, built like the app image, and its repository host (a prod
    # swarm's: docs/backup.md).
    backups = {
        ("taskstack:swarm:DatabaseImage", "database"),
        (IMAGE, "database-image"),
        ("taskstack:swarm:Backup", "backup"),
        ("taskstack:swarm:BackupRepository", "repository"),
    }
    return (
        COMPONENTS
        | {("taskstack:swarm:Proxy", "proxy")}
        | (MONITORING_COMPONENTS if monitoring else set())
        | (backups if backup else set())
        | resources
        | {(SECRET, name) for name in secret_keys}
    )


def registered(run: ProgramRun) -> set[tuple[str, str]]:
    pairs = [(r.type, r.name) for r in run.registrations]
    assert len(pairs) == len(set(pairs)), "a resource was registered twice"
    return set(pairs)


def test_dev_stack_registers_the_whole_swarm_stack(dev: ProgramRun) -> None:
    # dev: no Redis password and no Flower auth unless set; the dev-only database password.
    assert registered(dev) == expected(
        {
            "taskstack-dev-postgres-password",
            "taskstack-dev-database-url",
            "taskstack-dev-admin-database-url",
            "taskstack-dev-redis-url",
        }
    )


def test_prod_stack_registers_the_whole_swarm_stack(prod: ProgramRun) -> None:
    assert registered(prod) == expected(
        {
            f"taskstack-prod-{key}"
            for key in (
                "postgres-password",
                "redis-password",
                "flower-basic-auth",
                "database-url",
                "admin-database-url",
                "redis-url",
                "database-password",
                "monitoring-web-config",
                "console-password",
                "redis-exporter-passwords",
                "tls-ca",
                *(
                    f"{alias}-tls-{part}"
                    for alias in ("postgres", "backup", "repository")
                    for part in ("crt", "key")
                ),
            )
        },
        monitoring=True,
        backup=True,
    )


def test_no_container_volume_or_pulled_image_on_swarm(prod: ProgramRun) -> None:
    # Services replace containers; nodes create the named volumes and pull the pinned images.
    for type_ in (CONTAINER, VOLUME, REMOTE_IMAGE):
        assert not prod.of_type(type_), type_


def test_the_docker_target_stays_the_default_and_ignores_swarm_keys() -> None:
    run = run_stack("dev", endpointMode="dnsrr", publishMode="host", updateParallelism=3)
    assert not run.of_type(SERVICE)
    assert len(run.role("api")) == 2


def test_each_resource_sits_in_its_component(prod: ProgramRun) -> None:
    components = {r.urn: r.type for r in prod.registrations if not r.custom}
    parents = {r.name: components[r.parent] for r in prod.registrations if r.custom}
    assert parents["postgres"] == "taskstack:swarm:Database"
    assert parents["migrate"] == "taskstack:swarm:Migration"
    assert parents["worker"] == "taskstack:swarm:Workers"
    assert parents["taskstack-prod-database-url"] == "taskstack:swarm:Secrets"
    assert parents["data-network"] == "taskstack:swarm:Network"


# --- Networks -------------------------------------------------------------------------------------


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_networks_are_encrypted_attachable_overlays(stack: str) -> None:
    run = swarm(stack)
    for network in run.of_type(NETWORK):
        inputs = network.plain
        assert inputs["driver"] == "overlay"
        assert inputs["attachable"] is True
        assert inputs["options"] == {"encrypted": ""}
        # Docker reports the overlay driver's own options back: no replacement on every `up`.
        assert "options" in network.ignore_changes
    assert run.named("data-network", NETWORK).plain["internal"] is (stack == "prod")


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_overlay_encryption_is_a_setting(stack: str) -> None:
    # Off for a kernel without IPsec (ESP), where encrypted overlays carry nothing between nodes.
    run = swarm(stack, overlayEncryption=False)
    for network in run.of_type(NETWORK):
        assert "encrypted" not in (network.plain.get("options") or {}), network.name
        assert network.plain["driver"] == "overlay"


def test_services_attach_by_network_id_with_the_aliases_the_urls_use(prod: ProgramRun) -> None:
    ids = {r.outputs["name"]: r.id for r in prod.of_type(NETWORK)}
    data_id = ids["taskstack-prod-data"]
    for role, alias in (("postgres", "postgres"), ("redis", "redis")):
        (attachment,) = service(prod, role)["taskSpec"]["networksAdvanceds"]
        assert attachment == {"id": data_id, "aliases": [alias]}
    for role in APP_ROLES:
        attached = {a["id"] for a in service(prod, role)["taskSpec"]["networksAdvanceds"]}
        assert attached == set(ids.values()), role


# --- Secrets --------------------------------------------------------------------------------------


@pytest.mark.parametrize("secret", sorted(PROD_SECRETS))
def test_prod_credentials_appear_only_as_secrets(prod: ProgramRun, secret: str) -> None:
    plaintext = assert_only_secret(prod, secret)
    # ...not even wrapped: the only holders are Swarm secrets, which carry it base64-encoded.
    for resource in prod.registrations:
        if resource.type != SECRET:
            assert plaintext not in json.dumps(resource.plain), resource.name
    assert any(plaintext in secret_value(r) for r in prod.of_type(SECRET))


def test_dev_database_password_is_only_a_secret_too(dev: ProgramRun) -> None:
    for resource in dev.registrations:
        visible = json.dumps(without_secrets(resource.inputs))
        assert DEV_ONLY_POSTGRES_PASSWORD not in visible, resource.name


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_secret_data_is_a_secret_base64_input(stack: str) -> None:
    run = swarm(stack)
    for secret in run.of_type(SECRET):
        assert is_secret(secret.inputs["data"]), secret.name
        assert "name" not in secret.inputs  # auto-named: a new value gets a new name
        assert secret_value(secret)  # decodes as base64


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_no_credential_travels_in_an_environment(stack: str) -> None:
    run = swarm(stack)
    for role in ROLES:
        env = container_spec(run, role).get("env", {})
        assert not set(env) & CREDENTIAL_VARIABLES, (role, env)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_app_services_read_their_connections_from_secret_files(stack: str) -> None:
    run = swarm(stack)
    password = PROD_SECRETS["postgresPassword"] if stack == "prod" else DEV_ONLY_POSTGRES_PASSWORD
    app_password = app_role_password(password, "taskstack")
    redis_password = PROD_SECRETS["redisPassword"] if stack == "prod" else None
    for role in APP_ROLES:
        files = mounted_files(run, role)
        assert set(files) - {"flower_basic_auth"} == CONNECTION_FILES[role], role
        if "database_url" in files:
            database = urlsplit(files["database_url"])
            assert (database.hostname, database.port) == ("postgres", 5432)
            assert (database.username, database.password) == ("taskstack", app_password)
        if "admin_database_url" in files:
            admin = urlsplit(files["admin_database_url"])
            assert (admin.username, admin.password) == (POSTGRES_ADMIN_USER, password)
        for key in BROKER_FILES & set(files):
            redis = urlsplit(files[key])
            assert (redis.hostname, redis.port, redis.password) == ("redis", 6379, redis_password)


def test_the_app_settings_load_from_the_mounted_files(
    prod: ProgramRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The files Swarm would mount, read by the app's own settings class (pydantic-settings
    # `secrets_dir`): file names must be the setting names.
    for variable in CREDENTIAL_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    for name, value in {**mounted_files(prod, "api"), **mounted_files(prod, "flower")}.items():
        (tmp_path / name).write_text(value)
    settings = Settings(_secrets_dir=tmp_path)
    assert app_role_password(PROD_SECRETS["postgresPassword"], "taskstack") in settings.database_url
    assert settings.celery_broker_url == settings.redis_url
    assert PROD_SECRETS["redisPassword"] in settings.celery_result_backend
    assert settings.flower_basic_auth is not None
    assert settings.flower_basic_auth.get_secret_value() == PROD_SECRETS["flowerBasicAuth"]


def test_secret_files_are_readable_by_the_service_user_only(prod: ProgramRun) -> None:
    for role in ROLES:
        spec = container_spec(prod, role)
        uid, _, gid = spec["user"].partition(":")
        for mount in spec.get("secrets", []):
            assert (mount["fileUid"], mount["fileGid"]) == (uid, gid), role
            assert mount["fileMode"] == 0o400, role
            assert "/" not in mount["fileName"]  # relative: under /run/secrets


def test_postgres_reads_its_password_from_a_file(prod: ProgramRun) -> None:
    spec = container_spec(prod, "postgres")
    assert spec["env"][PASSWORD_FILE_VARIABLE] == "/run/secrets/postgres_password"
    files = mounted_files(prod, "postgres")
    assert files["postgres_password"] == PROD_SECRETS["postgresPassword"]
    # And its TLS files for the repository host (tests/infra/test_backup.py).
    assert set(files) == {
        "postgres_password",
        "pgbackrest-ca.crt",
        "pgbackrest.crt",
        "pgbackrest.key",
    }


def test_redis_requires_the_password_from_its_file(dev: ProgramRun, prod: ProgramRun) -> None:
    spec = container_spec(prod, "redis")
    assert mounted_files(prod, "redis") == {"redis_password": PROD_SECRETS["redisPassword"]}
    command = " ".join(spec["args"])
    assert '--requirepass "$(cat /run/secrets/redis_password)"' in command
    check = " ".join(spec["healthcheck"]["tests"])
    assert 'REDISCLI_AUTH="$(cat /run/secrets/redis_password)"' in check
    assert "redis-cli ping" in check
    assert "requirepass" not in " ".join(container_spec(dev, "redis")["args"])
    assert not container_spec(dev, "redis").get("secrets")


def test_flower_takes_its_basic_auth_from_a_file_in_prod(dev: ProgramRun, prod: ProgramRun) -> None:
    spec = container_spec(prod, "flower")
    assert mounted_files(prod, "flower")["flower_basic_auth"] == PROD_SECRETS["flowerBasicAuth"]
    assert spec["args"][:2] == ["sh", "-c"]
    assert 'FLOWER_BASIC_AUTH="$(cat /run/secrets/flower_basic_auth)"' in spec["args"][2]
    assert spec["args"][2].endswith(
        "exec celery -A app.monitoring flower --max_tasks=5000 --port=5555"
    )
    assert "/run/secrets/flower_basic_auth" in " ".join(spec["healthcheck"]["tests"])
    assert container_spec(dev, "flower")["args"][0] == "celery"  # no auth configured in dev


# --- Placement, replicas, rollout -----------------------------------------------------------------


def test_data_services_are_pinned_to_the_configured_node_labels() -> None:
    run = swarm(
        "prod",
        postgresNodeLabels='["db=primary", "disk=ssd"]',
        redisNodeLabels='["cache=yes"]',
    )
    assert service(run, "postgres")["taskSpec"]["placement"]["constraints"] == [
        "node.labels.db==primary",
        "node.labels.disk==ssd",
    ]
    assert service(run, "redis")["taskSpec"]["placement"]["constraints"] == [
        "node.labels.cache==yes"
    ]
    for role in APP_ROLES:
        assert "placement" not in service(run, role)["taskSpec"], role


def test_default_placement_labels(prod: ProgramRun) -> None:
    assert service(prod, "postgres")["taskSpec"]["placement"]["constraints"] == [
        "node.labels.taskstack.postgres==true"
    ]
    assert service(prod, "redis")["taskSpec"]["placement"]["constraints"] == [
        "node.labels.taskstack.redis==true"
    ]


def test_replicas_follow_config() -> None:
    run = swarm("prod", apiReplicas=3, workerReplicas=5, proxyReplicas=3)
    replicas = {role: service(run, role)["mode"]["replicated"]["replicas"] for role in ROLES}
    assert replicas == {
        "postgres": 1,
        "redis": 1,
        "migrate": 1,
        "api": 3,
        "worker": 5,
        "beat": 1,
        "flower": 1,
        "proxy": 3,
    }


def test_proxy_replicas_are_swarm_only() -> None:
    # One host has one of each published port: the docker target runs one proxy container.
    run = run_stack("prod", proxyReplicas=3)
    assert [c.name for c in run.of_type(CONTAINER) if "proxy" in c.name] == ["proxy"]


def test_rolling_updates_roll_back_on_failure_with_the_configured_pace() -> None:
    run = swarm("prod", updateParallelism=2, updateDelaySeconds=90, updateMonitorSeconds=45)
    orders = {}
    for role in ROLES:
        update = service(run, role)["updateConfig"]
        rollback = service(run, role)["rollbackConfig"]
        assert update["failureAction"] == "rollback", role
        # API tasks one at a time (the other keeps answering behind the proxy), whatever the key.
        parallelism = 1 if role == "api" else 2
        assert (update["parallelism"], update["delay"], update["monitor"]) == (
            parallelism,
            "1m30s",
            "45s",
        ), role
        assert rollback["failureAction"] == "pause", role
        assert rollback["order"] == update["order"], role
        orders[role] = update["order"]
    # New API and worker tasks start before old ones stop; a volume owner, beat (never two) and
    # the single Flower and migration stop first.
    assert orders == {
        "postgres": "stop-first",
        "redis": "stop-first",
        "migrate": "stop-first",
        "api": "start-first",
        "worker": "start-first",
        "beat": "stop-first",
        "flower": "stop-first",
        "proxy": "stop-first",  # one task per node owns the published port
    }


def test_api_update_order_is_a_setting() -> None:
    run = swarm("prod", apiUpdateOrder="stop-first")
    assert service(run, "api")["updateConfig"]["order"] == "stop-first"


def test_restart_policies(prod: ProgramRun) -> None:
    for role in ROLES:
        policy = service(prod, role)["taskSpec"]["restartPolicy"]
        assert policy["condition"] == ("none" if role == "migrate" else "any"), role
        assert policy["delay"] == "5s", role


def test_restart_delay_is_a_setting_in_the_provider_s_duration_form() -> None:
    run = swarm("prod", restartDelaySeconds=60)
    for role in ROLES:
        assert service(run, role)["taskSpec"]["restartPolicy"]["delay"] == "1m", role
    assert (
        service(swarm("prod", restartDelaySeconds=0), "api")["taskSpec"]["restartPolicy"]["delay"]
        == "0s"
    )


# --- Health and gating ----------------------------------------------------------------------------


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_every_service_is_health_checked_and_converged(stack: str) -> None:
    run = swarm(stack, waitTimeoutSeconds=150)
    for role in ROLES:
        inputs = service(run, role)
        check = inputs["taskSpec"]["containerSpec"]["healthcheck"]
        assert check["tests"], role
        for key in ("interval", "timeout", "startPeriod"):
            assert GO_DURATION.fullmatch(check[key]), (role, check[key])
        assert inputs["convergeConfig"] == {"delay": "5s", "timeout": "2m30s"}, role


def test_healthchecks_use_the_contracted_signals(prod: ProgramRun) -> None:
    def check(role: str) -> str:
        return " ".join(container_spec(prod, role)["healthcheck"]["tests"])

    assert "pg_isready" in check("postgres")
    assert "/health/ready" in check("api")
    assert "find /tmp/celery-worker-heartbeat -mmin" in check("worker")
    assert "celerybeat-schedule" in check("beat")
    assert "/healthcheck" in check("flower")


def test_the_migration_runs_once_and_is_healthy_only_after_success(prod: ProgramRun) -> None:
    spec = container_spec(prod, "migrate")
    assert spec["args"][:2] == ["sh", "-c"]
    script = spec["args"][2]
    # The marker is touched only if alembic exits 0; the task then stays up so that the
    # provider's convergence (running tasks only) sees it.
    assert script.startswith(f"alembic upgrade head && touch {MIGRATED_MARKER} && ")
    assert script.endswith("exec sleep infinity")
    assert spec["healthcheck"]["tests"] == ["CMD", "test", "-f", MIGRATED_MARKER]
    assert service(prod, "migrate")["taskSpec"]["restartPolicy"]["condition"] == "none"
    mounts = {m["target"]: m["type"] for m in spec["mounts"]}
    assert mounts[TMP] == "tmpfs"  # the marker lives on the task's own tmpfs


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_dependants_wait_for_postgres_redis_and_the_migration(stack: str) -> None:
    run = swarm(stack)
    urn = {role: run.named(role, SERVICE).urn for role in ROLES}
    assert urn["postgres"] in run.named("migrate", SERVICE).dependencies
    for role in GATED:
        missing = {urn["postgres"], urn["redis"], urn["migrate"]} - run.named(
            role, SERVICE
        ).dependencies
        assert not missing, (role, missing)


@contextmanager
def quiet_abandoned_futures() -> Iterator[None]:
    # The failed registration rejects futures (urn, id, outputs) that the stopped program never
    # awaits; asyncio would log each as "exception was never retrieved" when it is collected.
    # The failure is asserted on; mark them retrieved.
    try:
        yield
    finally:
        for obj in gc.get_objects():
            if isinstance(obj, asyncio.Future) and obj.done() and not obj.cancelled():
                obj.exception()


class ConvergeFailure(ProgramMocks):
    """The provider's answer when a service does not converge: it deletes it and fails."""

    def __init__(self, failing: str) -> None:
        super().__init__()
        self.failing = failing
        self.created: list[tuple[str, str]] = []

    def new_resource(self, args):  # type: ignore[no-untyped-def]
        self.created.append((args.typ, args.name))
        if args.typ == SERVICE and args.name == self.failing:
            raise RuntimeError("Service with ID (x) did not converge after 2m0s")
        return super().new_resource(args)


@pytest.mark.parametrize("failing", ["migrate", "postgres", "redis"])
def test_a_service_that_does_not_converge_stops_every_dependant(failing: str) -> None:
    mocks = ConvergeFailure(failing)
    with quiet_abandoned_futures(), pytest.raises(Exception, match="did not converge"):
        run_program({"environment": "dev", "target": "swarm"}, stack="dev", mocks=mocks)
    services = {name for typ, name in mocks.created if typ == SERVICE}
    assert failing in services
    assert not services & set(GATED), services


def test_a_converged_migration_lets_every_dependant_register() -> None:
    mocks = ConvergeFailure("none")
    run_program({"environment": "dev", "target": "swarm"}, stack="dev", mocks=mocks)
    created = {name for typ, name in mocks.created if typ == SERVICE}
    assert created == {*ROLES, *MONITORING_ROLES, *BACKUP_ROLES}


# --- Publishing -----------------------------------------------------------------------------------


def test_swarm_defaults_are_vip_and_the_ingress_mesh(prod: ProgramRun) -> None:
    for role in ROLES:
        assert service(prod, role)["endpointSpec"]["mode"] == "vip", role
    # The proxy owns the API's port; the API tasks publish nothing.
    assert "ports" not in service(prod, "api")["endpointSpec"]
    assert service(prod, "proxy")["endpointSpec"]["ports"] == [
        {"targetPort": 8080, "publishedPort": 8000, "protocol": "tcp", "publishMode": "ingress"}
    ]
    assert service(prod, "flower")["endpointSpec"]["ports"] == [
        {"targetPort": 5555, "publishedPort": 5555, "protocol": "tcp", "publishMode": "ingress"}
    ]


def test_endpoint_and_publish_modes_are_settings() -> None:
    run = swarm("prod", endpointMode="dnsrr", publishMode="host", apiPort=18000)
    for role in ROLES:
        assert service(run, role)["endpointSpec"]["mode"] == "dnsrr", role
    (port,) = service(run, "proxy")["endpointSpec"]["ports"]
    assert (port["publishedPort"], port["publishMode"]) == (18000, "host")


def test_postgres_and_redis_are_never_published_on_swarm(dev: ProgramRun) -> None:
    # Swarm publishes on every address of a node: the dev ports on 127.0.0.1 have no equivalent.
    for role in ("postgres", "redis", "migrate", "worker", "beat"):
        assert "ports" not in service(dev, role)["endpointSpec"], role


# --- The rest of the description, rendered -------------------------------------------------------


def test_app_services_run_the_built_image_by_id(prod: ProgramRun) -> None:
    image_id = prod.named("app-image", IMAGE).outputs["repoDigest"]
    for role in APP_ROLES:
        assert container_spec(prod, role)["image"] == image_id, role
    # PostgreSQL with pgBackRest: built on top of postgresImage, run by id (docs/backup.md).
    database_id = prod.named("database-image", IMAGE).outputs["repoDigest"]
    assert container_spec(prod, "postgres")["image"] == database_id
    assert container_spec(prod, "backup")["image"] == database_id
    assert container_spec(prod, "redis")["image"] == "redis:8"


def test_roles_run_their_contracted_commands() -> None:
    run = swarm("prod", workerConcurrency=7, apiWorkers=3)
    api = container_spec(run, "api")["args"]
    assert api[:2] == ["uvicorn", "app.main:app"]
    assert api[api.index("--workers") + 1] == "3"
    assert container_spec(run, "worker")["args"][-1] == "--concurrency=7"
    assert container_spec(run, "beat")["args"][:4] == ["celery", "-A", "app.worker", "beat"]
    # The image's own server, archiving its WAL (docs/backup.md).
    postgres = container_spec(run, "postgres")["args"]
    assert postgres[0] == "postgres"
    assert "archive_command=pgbackrest archive-push %p" in postgres


def test_prod_limits_and_reservations(dev: ProgramRun, prod: ProgramRun) -> None:
    worker = service(prod, "worker")["taskSpec"]["resources"]
    assert worker["limits"] == {"memoryBytes": 1024 * 1024**2, "nanoCpus": 1_000_000_000}
    assert worker["reservation"] == {"memoryBytes": 256 * 1024**2, "nanoCpus": 250_000_000}
    for role in ROLES:
        resources = service(prod, role)["taskSpec"]["resources"]
        assert 0 < resources["reservation"]["memoryBytes"] < resources["limits"]["memoryBytes"]
        assert "resources" not in service(dev, role)["taskSpec"], role


def test_reservations_are_the_configured_share_of_the_limits() -> None:
    run = swarm("prod", reservationPercent=10)
    worker = service(run, "worker")["taskSpec"]["resources"]
    assert worker["reservation"] == {"memoryBytes": 1024 * 1024**2 // 10, "nanoCpus": 100_000_000}
    # 0 reserves nothing: the limits alone.
    resources = service(swarm("prod", reservationPercent=0), "worker")["taskSpec"]["resources"]
    assert "reservation" not in resources
    assert resources["limits"]["nanoCpus"] == 1_000_000_000


def test_prod_services_are_hardened(prod: ProgramRun) -> None:
    for role in ROLES:
        spec = container_spec(prod, role)
        assert spec["user"] in {"10001:10001", "999:999", "99:99"}, role
        assert spec["readOnly"] is True, role
        assert spec["capDrops"] == ["ALL"], role
        assert spec["init"] is True, role
        assert any(m["type"] == "tmpfs" and m["target"] == TMP for m in spec["mounts"]), role


def test_tmpfs_mounts_keep_size_and_the_default_mode(prod: ProgramRun) -> None:
    # Mode 1777 is a tmpfs's default and is not sent: the provider reads a mode back without the
    # sticky bit (1023 -> 511), which would be a diff on every `up` (docs/swarm.md).
    mounts = {m["target"]: m for m in container_spec(prod, "postgres")["mounts"]}
    assert mounts[TMP]["tmpfsOptions"] == {"sizeBytes": 64 * 1024**2}
    # Without backups the socket's directory is a tmpfs; with them, a volume the backup role
    # shares (docs/backup.md).
    assert mounts["/var/run/postgresql"]["type"] == "volume"
    unarchived = swarm("prod", backup="false")
    mounts = {m["target"]: m for m in container_spec(unarchived, "postgres")["mounts"]}
    assert mounts["/var/run/postgresql"]["tmpfsOptions"] == {"sizeBytes": 16 * 1024**2}


def test_a_tmpfs_mode_the_provider_cannot_read_back_is_refused() -> None:
    from infra.targets.swarm_values import tmpfs_options

    assert tmpfs_options("size=1m,mode=700").mode == 0o700
    with pytest.raises(ValueError, match="sticky"):
        tmpfs_options("size=1m,mode=2770")


def test_data_and_beat_volumes_are_named_and_labelled(prod: ProgramRun) -> None:
    for role, target in (
        ("postgres", "/var/lib/postgresql/data"),
        ("redis", "/data"),
        ("beat", "/var/lib/taskstack"),
    ):
        (volume,) = [
            m
            for m in container_spec(prod, role)["mounts"]
            if m["type"] == "volume" and m["target"] == target
        ]
        assert volume["source"] == f"taskstack-prod-{role}-data"
        assert volume["target"] == target
        labels = {i["label"]: i["value"] for i in volume["volumeOptions"]["labels"]}
        assert labels["com.taskstack.stack"] == "prod"


def test_dev_api_reloads_from_a_bind_mount(dev: ProgramRun) -> None:
    spec = container_spec(dev, "api")
    assert "--reload" in spec["args"]
    assert [m["type"] for m in spec["mounts"] if m["type"] != "tmpfs"] == ["bind"]


def test_workers_stop_gracefully(prod: ProgramRun) -> None:
    spec = container_spec(prod, "worker")
    assert spec["stopSignal"] == "SIGTERM"
    assert spec["stopGracePeriod"] == "5m"  # workerStopGraceSeconds 300 in Pulumi.prod.yaml
    assert container_spec(prod, "postgres")["stopSignal"] == "SIGINT"


def test_everything_carries_the_labels(prod: ProgramRun) -> None:
    def labels(items: list[dict[str, str]]) -> dict[str, str]:
        return {item["label"]: item["value"] for item in items}

    for role in ROLES:
        for found in (
            labels(service(prod, role)["labels"]),
            labels(container_spec(prod, role)["labels"]),
        ):
            assert found == {
                "com.taskstack.stack": "prod",
                "com.taskstack.role": role,
                "com.taskstack.managed-by": "pulumi",
            }
    for resource in prod.of_type(SECRET) + prod.of_type(NETWORK):
        assert labels(resource.plain["labels"])["com.taskstack.stack"] == "prod"


def test_logs_rotate_as_on_the_docker_target(prod: ProgramRun) -> None:
    for role in ROLES:
        assert service(prod, role)["taskSpec"]["logDriver"] == {
            "name": "json-file",
            "options": {"max-size": "10m", "max-file": "3"},
        }


def test_stack_outputs_name_the_services(prod: ProgramRun) -> None:
    outputs = prod.stack_outputs
    roles = (*ROLES, *MONITORING_ROLES, *BACKUP_ROLES, *REPOSITORY_ROLES)
    assert outputs["containerNames"] == {role: [f"taskstack-prod-{role}"] for role in roles}
    assert outputs["apiUrl"] == "http://127.0.0.1:8000"
    assert is_secret(outputs["databaseUrl"])


def test_a_second_run_registers_identical_inputs() -> None:
    assert_second_run_identical(lambda mocks: swarm("prod", mocks=mocks))


def test_each_worker_task_is_named_by_its_slot(prod: ProgramRun) -> None:
    # Flower and `celery inspect` show worker-1@<host>, worker-2@<host>: Swarm fills in the slot.
    env = container_spec(prod, "worker")["env"]
    assert env["CELERY_WORKER_HOSTNAME"] == "worker-{{.Task.Slot}}@%h"
    for role in ("api", "beat", "flower"):
        assert "CELERY_WORKER_HOSTNAME" not in container_spec(prod, role).get("env", {}), role
