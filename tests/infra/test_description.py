"""The description alone, without mocks or an engine: built from each stack file, target-neutral,
ordered by `depends_on`, credentials only ever secret Outputs.

One test renders the same description object with both targets under Pulumi's mocks.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml

from infra import proxy
from infra.config import Credentials, StackConfig, parse_stack_config
from infra.spec import (
    API_ALIAS,
    APP_ROLES,
    BACKUP_ROLES,
    MONITORING_ROLES,
    REPLICA,
    ROLES,
    Service,
    StackDescription,
    describe_stack,
    in_dependency_order,
)
from infra.targets import docker as docker_target
from infra.targets import swarm as swarm_target
from tests.infra.pulumi_mocks import AUTONAME_SUFFIX, PROJECT, REPO_ROOT, ProgramMocks
from tests.infra.stacks import PROD_SECRETS

# The repository's stack files, wherever they live (the rehearsal keeps its own overlays).
STACK_FILES = sorted(
    {p for p in REPO_ROOT.glob("**/Pulumi.*.yaml") if ".venv" not in p.parts and p.is_file()}
)


# Pulumi's test decorator (it awaits the returned Output), typed for mypy's strict mode.
runtime_test = typing.cast(
    "Callable[[Callable[[], pulumi.Output[Any]]], Callable[[], None]]", pulumi.runtime.test
)


@pytest.fixture(autouse=True)
def event_loop() -> Iterator[None]:
    # Outputs are futures on the thread's loop; earlier tests may have closed or unset it.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield
    # Let the description's Outputs settle (plain values: they resolve at once), then close.
    pending = asyncio.all_tasks(loop)
    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    asyncio.set_event_loop(None)
    loop.close()


def stack_of(path: Path) -> str:
    return path.name.removeprefix("Pulumi.").removesuffix(".yaml")


def config_of(path: Path) -> tuple[StackConfig, Credentials]:
    document = yaml.safe_load(path.read_text()) or {}
    prefix = f"{PROJECT}:"
    values: dict[str, Any] = {
        k.removeprefix(prefix): v
        for k, v in (document.get("config") or {}).items()
        if k.startswith(prefix)
    }
    # As the CLI hands them over: text, arrays as JSON.
    values = {k: json.dumps(v) if isinstance(v, list) else str(v) for k, v in values.items()}
    prod = values.get("environment", "prod") == "prod"
    secrets = dict(PROD_SECRETS) if prod else {}
    config = parse_stack_config({**values, **secrets}, set(secrets))
    return config, credentials(secrets)


def credentials(secrets: dict[str, str]) -> Credentials:
    def secret(key: str) -> pulumi.Output[str] | None:
        return pulumi.Output.secret(secrets[key]) if key in secrets else None

    return Credentials(
        postgres_password=secret("postgresPassword") or pulumi.Output.secret("x" * 16),
        redis_password=secret("redisPassword"),
        flower_basic_auth=secret("flowerBasicAuth"),
    )


def describe(path: Path, **changes: Any) -> StackDescription:
    config, creds = config_of(path)
    return describe_stack(config.model_copy(update=changes), creds, stack_of(path), REPO_ROOT)


def test_the_stack_files_are_found() -> None:
    assert {"dev", "prod"} <= {stack_of(p) for p in STACK_FILES}


# --- Target-neutral -------------------------------------------------------------------------------


def field_types(cls: Any, seen: set[Any] | None = None) -> Iterator[tuple[str, Any]]:
    """Every (field name, annotation) of a dataclass and of the dataclasses it holds."""
    seen = seen if seen is not None else set()
    if cls in seen:
        return
    seen.add(cls)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        yield f"{cls.__name__}.{f.name}", hints[f.name]
        for inner in _classes_in(hints[f.name]):
            if dataclasses.is_dataclass(inner):
                yield from field_types(inner, seen)


def _classes_in(annotation: Any) -> Iterator[Any]:
    yield annotation
    for arg in typing.get_args(annotation):
        yield from _classes_in(arg)


def test_the_description_holds_no_target_specific_type_or_field() -> None:
    for name, annotation in field_types(StackDescription):
        lowered = name.lower().replace("dockerfile", "")  # the build file, not a target
        assert "swarm" not in lowered, name
        assert "docker" not in lowered, name
        for cls in _classes_in(annotation):
            module = getattr(cls, "__module__", "")
            assert not module.startswith(("pulumi_docker", "infra.targets")), (name, cls)
            if module.startswith("pulumi"):
                assert typing.get_origin(annotation) is not None or cls is pulumi.Output, name


def plain(value: Any) -> Any:
    """The description as comparable data: Outputs (credentials) replaced by a marker."""
    if isinstance(value, pulumi.Output):
        return "<secret output>"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [plain(v) for v in value]
    return value


def role(description: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in description["services"] if s["role"] == name)


def roles(description: dict[str, Any]) -> set[str]:
    return {s["role"] for s in description["services"]}


def front_door(description: dict[str, Any]) -> dict[str, Any]:
    return role(description, "proxy")


@pytest.mark.parametrize("path", STACK_FILES, ids=stack_of)
def test_the_target_changes_nothing_but_the_front_doors_addressing(path: Path) -> None:
    # What depends on the target is said by the description itself, not patched in by a target:
    # the name the proxy resolves the API copies by, and how many proxies there are.
    as_docker = plain(describe(path, target="docker", proxy_replicas=3))
    as_swarm = plain(describe(path, target="swarm", proxy_replicas=3))
    assert as_docker.pop("target") == "docker"
    assert as_swarm.pop("target") == "swarm"
    on_one_host, on_a_swarm = front_door(as_docker), front_door(as_swarm)
    assert on_one_host["env"].pop(proxy.API_HOST_ENV) == API_ALIAS
    assert on_a_swarm["env"].pop(proxy.API_HOST_ENV) == f"tasks.{API_ALIAS}"
    assert on_one_host.pop("replicas") == 1  # one host binds the API port once
    assert on_a_swarm.pop("replicas") == 3
    # Prometheus finds every copy by DNS: a network alias on one host, `tasks.<alias>` on a swarm.
    if "prometheus" in roles(as_docker):
        one_host, swarm = (role(d, "prometheus")["env"] for d in (as_docker, as_swarm))
        on_docker, on_swarm = one_host.pop("PROMETHEUS_CONFIG"), swarm.pop("PROMETHEUS_CONFIG")
        assert "tasks.worker" in on_swarm
        assert "tasks.worker" not in on_docker
        assert on_swarm.replace("tasks.", "").replace("swarm", "docker") == on_docker
    assert as_docker == as_swarm


@pytest.mark.parametrize("path", STACK_FILES, ids=stack_of)
def test_credentials_are_only_secret_outputs(path: Path) -> None:
    description = describe(path)
    for service in description.services:
        # Every credential a role reads is a file holding one of the stack's secret Outputs.
        assert set(service.file_secrets.files.values()) <= set(description.secrets), service.role
        shown = repr(plain(service))
        for secret in PROD_SECRETS.values():
            assert secret.split(":")[-1] not in shown, service.role
    assert all(isinstance(v, pulumi.Output) for v in description.secrets.values())


# --- Ordering -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", STACK_FILES, ids=stack_of)
def test_services_come_in_dependency_order(path: Path) -> None:
    description = describe(path)
    order = [s.role for s in description.services]
    prod = description.environment == "prod"
    monitoring = MONITORING_ROLES if prod else ()
    backup = BACKUP_ROLES if prod else ()
    assert sorted(order) == sorted((*ROLES, *monitoring, *backup))
    for service in description.services:
        for upstream in service.depends_on:
            assert order.index(upstream) < order.index(service.role), (upstream, service.role)
    assert description.service("migrate").depends_on == ("postgres",)
    assert description.service("migrate").one_shot
    for role in set(APP_ROLES) - {"migrate"}:
        assert set(description.service(role).depends_on) == {"postgres", "redis", "migrate"}
    if prod:
        # backup_status is the migration's table.
        assert description.service("backup").depends_on == ("migrate",)


def test_ordering_is_derived_whatever_order_the_roles_are_listed_in() -> None:
    services = describe(STACK_FILES[0]).services
    ordered = in_dependency_order(tuple(reversed(services)))
    roles = [s.role for s in ordered]
    assert roles.index("postgres") < roles.index("migrate") < roles.index("api")
    assert roles.index("redis") < roles.index("worker")


def test_a_cycle_or_an_unknown_role_is_refused() -> None:
    services = {s.role: s for s in describe(STACK_FILES[0]).services}
    cyclic = dataclasses.replace(services["postgres"], depends_on=("api",))
    with pytest.raises(ValueError, match="cycle"):
        in_dependency_order((cyclic, *(s for r, s in services.items() if r != "postgres")))
    orphan: Service = dataclasses.replace(services["api"], depends_on=("postgres",))
    with pytest.raises(ValueError, match="not described"):
        in_dependency_order((orphan,))


# --- What each role says once ---------------------------------------------------------------------


def test_each_worker_copy_is_named_by_its_number() -> None:
    description = describe(STACK_FILES[0])
    worker = description.service("worker")
    assert worker.replica_env == {"CELERY_WORKER_HOSTNAME": f"worker-{REPLICA}@%h"}
    assert all(not s.replica_env for s in description.services if s is not worker)


@pytest.mark.parametrize("stack", ["Pulumi.dev.yaml", "Pulumi.prod.yaml"])
def test_the_api_logs_a_line_per_request_only_when_asked(stack: str) -> None:
    quiet = describe(REPO_ROOT / stack).service("api").command
    assert "--no-access-log" in quiet
    loud = describe(REPO_ROOT / stack, api_access_log=True).service("api").command
    assert "--no-access-log" not in loud


def test_only_developer_ports_are_local_only() -> None:
    dev = describe(REPO_ROOT / "Pulumi.dev.yaml")
    for service in dev.services:
        for port in service.ports:
            assert port.local_only is (service.role in {"postgres", "redis"}), service.role


def test_data_roles_are_pinned_and_app_roles_are_not() -> None:
    prod = describe(REPO_ROOT / "Pulumi.prod.yaml")
    assert prod.service("postgres").node_labels == ("taskstack.postgres=true",)
    assert prod.service("redis").node_labels == ("taskstack.redis=true",)
    assert all(not prod.service(role).node_labels for role in APP_ROLES)


# --- Both targets, one description (mocks) --------------------------------------------------------


@runtime_test
def test_both_targets_render_the_same_description_object() -> pulumi.Output[Any]:
    pulumi.runtime.set_mocks(ProgramMocks(), project=PROJECT, stack="dev", preview=False)
    description = describe(REPO_ROOT / "Pulumi.dev.yaml")
    containers = docker_target.render(description).names
    services = swarm_target.render(description).names
    assert set(containers) == set(services) == set(ROLES)
    assert len(containers["worker"]) == description.service("worker").replicas
    assert len(services["worker"]) == 1  # one service, its replicas Swarm's tasks

    def check(names: list[str]) -> None:
        *workers, flower, swarm_worker = names
        # Workers are replaced side by side on docker: auto-named (a new name per replacement).
        assert workers == [f"worker-{n}{AUTONAME_SUFFIX}" for n in (1, 2)]
        assert flower == description.container_name("flower")
        assert swarm_worker == description.container_name("worker")

    return pulumi.Output.all(
        *containers["worker"], *containers["flower"], *services["worker"]
    ).apply(check)
