"""Every dev/prod difference, one assertion each, and the prod hardening, asserted through mocks."""

from __future__ import annotations

import itertools
import json
import re

import pytest

from infra.spec import (
    API_BACKLOG,
    API_KEEP_ALIVE_SECONDS,
    API_MAX_CONNECTIONS,
    APP_MAX_PROCESSES,
    DATA_MAX_PROCESSES,
    LABEL_ROLE,
    MONITORING_MAX_PROCESSES,
    MONITORING_ROLES,
    PROXY_MAX_PROCESSES,
)
from tests.infra.pulumi_mocks import (
    NETWORK,
    VOLUME,
    ProgramRun,
    Registration,
    without_secrets,
)
from tests.infra.stacks import (
    PROD_SECRETS,
    assert_only_secret,
    role_containers,
    uploaded_files,
)

DATA_ROLES = ("postgres", "redis")


# --- dev / prod differences -----------------------------------------------------------------------


def test_dev_api_reloads_from_a_bind_mount_of_app(dev: ProgramRun) -> None:
    api = dev.named("api-1").plain
    assert "--reload" in api["command"]
    assert [m["type"] for m in api["mounts"]] == ["bind"]


def test_prod_api_runs_one_process_per_cpu_of_a_copy_from_the_image(prod: ProgramRun) -> None:
    api = prod.named("api-1").plain
    assert "--reload" not in api["command"]
    assert api["command"][api["command"].index("--workers") + 1] == "1"
    assert float(api["cpus"]) == 1.0
    assert "mounts" not in api


def test_workers_log_each_job_in_dev_and_only_warnings_in_prod(
    dev: ProgramRun, prod: ProgramRun
) -> None:
    assert "--loglevel=INFO" in dev.named("worker-1").plain["command"]
    assert "--loglevel=WARNING" in prod.named("worker-1").plain["command"]


def test_workers_and_flower_yield_the_cpu_to_the_front_door_in_both_stacks(
    dev: ProgramRun, prod: ProgramRun
) -> None:
    # docs/infra.md `backgroundCpuShares`: a weight under contention, not a limit.
    for run in (dev, prod):
        for container in role_containers(run):
            expected = 256 if _role(container) in ("worker", "flower") else None
            assert container.plain.get("cpuShares") == expected, container.name


def test_dev_publishes_postgres_and_redis_on_loopback_only(dev: ProgramRun) -> None:
    assert dev.named("postgres").plain["ports"] == [
        {"internal": 5432, "external": 15432, "ip": "127.0.0.1", "protocol": "tcp"}
    ]
    assert dev.named("redis").plain["ports"] == [
        {"internal": 6379, "external": 16379, "ip": "127.0.0.1", "protocol": "tcp"}
    ]


def test_prod_publishes_no_postgres_or_redis_port(prod: ProgramRun) -> None:
    for role in DATA_ROLES:
        assert not prod.named(role).plain.get("ports"), role


def test_data_network_is_internal_in_prod_only(dev: ProgramRun, prod: ProgramRun) -> None:
    assert dev.named("data-network", NETWORK).plain["internal"] is False
    assert prod.named("data-network", NETWORK).plain["internal"] is True
    assert prod.named("app-network", NETWORK).plain["internal"] is False


def test_prod_postgres_and_redis_sit_on_the_internal_network_only(prod: ProgramRun) -> None:
    internal = prod.named("data-network", NETWORK).outputs["name"]
    for role in DATA_ROLES:
        networks = [n["name"] for n in prod.named(role).plain["networksAdvanced"]]
        assert networks == [internal], role


def test_data_volumes_survive_destroy_in_prod_only(dev: ProgramRun, prod: ProgramRun) -> None:
    for name in ("postgres-data", "redis-data", "beat-data"):
        assert prod.named(name, VOLUME).retain_on_delete, name
        assert not dev.named(name, VOLUME).retain_on_delete, name


def test_limits_in_prod_only(dev: ProgramRun, prod: ProgramRun) -> None:
    for container in role_containers(prod):
        assert container.plain["memory"] > 0, container.name
        assert float(container.plain["cpus"]) > 0, container.name
    for container in role_containers(dev):
        assert "memory" not in container.plain, container.name


def test_redis_requires_a_password_in_prod_only(dev: ProgramRun, prod: ProgramRun) -> None:
    assert uploaded_files(dev, dev.named("redis")) == {}
    assert "--requirepass" not in " ".join(dev.named("redis").plain["command"])
    password = uploaded_files(prod, prod.named("redis"))["/run/secrets/redis_password"]
    assert password == PROD_SECRETS["redisPassword"]
    assert "--requirepass" in " ".join(prod.named("redis").plain["command"])


def test_flower_requires_basic_auth_in_prod(dev: ProgramRun, prod: ProgramRun) -> None:
    assert "/run/secrets/flower_basic_auth" not in uploaded_files(dev, dev.named("flower"))
    auth = uploaded_files(prod, prod.named("flower"))["/run/secrets/flower_basic_auth"]
    assert auth == PROD_SECRETS["flowerBasicAuth"]


def test_image_tag_is_the_stack_name(dev: ProgramRun, prod: ProgramRun) -> None:
    assert dev.stack_outputs["imageName"] == "taskstack-app:dev"
    assert prod.stack_outputs["imageName"] == "taskstack-app:prod"


# --- prod hardening -------------------------------------------------------------------------------


def test_prod_containers_are_hardened(prod: ProgramRun) -> None:
    for container in role_containers(prod):
        inputs = container.plain
        # The app's, the data images', HAProxy's, nobody (Prometheus, Alertmanager, the
        # PostgreSQL exporter) and redis_exporter's: never root.
        users = {"10001:10001", "999:999", "99:99", "65534:65534", "59000:59000"}
        assert inputs["user"] in users, container.name
        assert inputs["securityOpts"] == ["no-new-privileges:true"], container.name
        assert inputs["capabilities"]["drops"] == ["ALL"], container.name
        assert not inputs["capabilities"].get("adds"), container.name
        assert inputs["readOnly"] is True, container.name
        assert "/tmp" in inputs["tmpfs"], container.name  # noqa: S108 - a tmpfs mount point


def test_dev_containers_are_not_read_only(dev: ProgramRun) -> None:
    for container in role_containers(dev):
        assert container.plain["readOnly"] is False, container.name


@pytest.mark.parametrize("secret", sorted(PROD_SECRETS))
def test_prod_secrets_appear_only_as_secrets(prod: ProgramRun, secret: str) -> None:
    plaintext = assert_only_secret(prod, secret)
    # ...and they are really used, under a secret marker.
    assert any(plaintext in json.dumps(r.inputs) for r in prod.containers())


def test_dev_database_password_is_a_secret_too(dev: ProgramRun) -> None:
    password = uploaded_files(dev, dev.named("postgres"))["/run/secrets/postgres_password"]
    for resource in dev.registrations:
        assert password not in json.dumps(without_secrets(resource.inputs)), resource.name


# --- Overload: bounded processes, a broker that refuses rather than dies, bounded connections ----


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_every_container_has_a_process_limit(stack: str, dev: ProgramRun, prod: ProgramRun) -> None:
    run = dev if stack == "dev" else prod
    for container in role_containers(run):
        (limit,) = container.plain["ulimits"]
        bounds: dict[str, int] = {
            "postgres": DATA_MAX_PROCESSES,
            "redis": DATA_MAX_PROCESSES,
            "backup": DATA_MAX_PROCESSES,  # PostgreSQL's user, whose files it reads
            "proxy": PROXY_MAX_PROCESSES,
            **dict.fromkeys(MONITORING_ROLES, MONITORING_MAX_PROCESSES),
        }
        bound = bounds.get(_role(container), APP_MAX_PROCESSES)
        assert limit == {"name": "nproc", "soft": bound, "hard": bound}, container.name


def test_redis_refuses_writes_below_its_memory_limit(prod: ProgramRun) -> None:
    redis = prod.named("redis")
    command = " ".join(redis.plain["command"])
    assert "--maxmemory-policy noeviction" in command
    (maxmemory,) = re.findall(r"--maxmemory (\d+)mb", command)
    assert 0 < int(maxmemory) < redis.plain["memory"]


def test_each_api_process_bounds_its_connections(prod: ProgramRun) -> None:
    command = prod.role("api")[0].plain["command"]
    flags = dict(itertools.pairwise(command))
    assert flags["--limit-concurrency"] == str(API_MAX_CONNECTIONS)
    assert flags["--timeout-keep-alive"] == str(API_KEEP_ALIVE_SECONDS)
    assert flags["--backlog"] == str(API_BACKLOG)


def _role(container: Registration) -> str:
    labels = {label["label"]: label["value"] for label in container.plain["labels"]}
    return str(labels[LABEL_ROLE])
