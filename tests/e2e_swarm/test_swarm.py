"""The prod stack as Swarm services, rehearsed on this engine made a single-node swarm: convergence,
secrets, overlays, the tutorial, 500 jobs through the replicated workers, a release rolled out while
jobs run without a failed request through the proxy, and scaling the workers from 2 to 4 by
config.

The tests run in file order on one stack: the release and the scaling build on what came before.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import docker
import docker.errors
import httpx
import pytest

from deploy.probe import Probe, ProbeReport, late_jobs, new_release, write_report
from deploy.stack import ARTIFACTS, SUCCEEDED_LINE, SwarmStack, eventually
from infra.spec import APP_ROLES, LABEL_STACK
from rehearsal.engine import STACK_LABEL

ROLES_REPLICAS = {
    "postgres": 1,
    "redis": 1,
    "migrate": 1,
    "api": 2,
    "worker": 2,
    "beat": 1,
    "flower": 1,
    "proxy": 1,
    # Archiving with a repository host (a prod swarm's): both are pgBackRest TLS servers.
    "backup": 1,
    "repository": 1,
}
BROKER_FILES = ("redis_url", "celery_broker_url", "celery_result_backend")
# Each app role's connection files: only what it uses (tests/infra/test_credentials.py).
CONNECTION_FILES = {
    "migrate": ("database_url", "admin_database_url"),
    "api": ("database_url", *BROKER_FILES),
    "worker": ("database_url", *BROKER_FILES),
    "beat": ("database_url", *BROKER_FILES),
    "flower": BROKER_FILES,
}


def _wait_all_succeeded(stack: SwarmStack, ids: list[str], *, within: float) -> dict[str, int]:
    def finished() -> dict[str, int] | None:
        """every job finished"""
        statuses = stack.job_statuses(ids)
        done = statuses.get("succeeded", 0) + statuses.get("failed", 0)
        return statuses if done == len(ids) else None

    return eventually(finished, within=within, every=2)


def _succeeded_by_container(stack: SwarmStack) -> dict[str, set[str]]:
    return {
        container.name: set(SUCCEEDED_LINE.findall(container.logs().decode(errors="replace")))
        for container in stack.task_containers("worker")
    }


# -- convergence and the phase-1 assumptions
# -------------------------------------------------------------------------


def test_every_service_converged_healthy_with_its_replicas(swarm_stack: SwarmStack) -> None:
    image_id = swarm_stack.outputs["imageId"]
    for role, replicas in ROLES_REPLICAS.items():
        service = swarm_stack.service(role)
        assert service.attrs["Spec"]["Mode"]["Replicated"]["Replicas"] == replicas, role
        containers = swarm_stack.task_containers(role)
        assert len(containers) == replicas, role
        for container in containers:
            # Converged means running, and Swarm reports running only once healthy.
            assert container.attrs["State"]["Health"]["Status"] == "healthy", container.name
        spec = service.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]
        assert spec["Healthcheck"]["Test"], role
        if role in APP_ROLES:
            # The image the program built, by its local id: Swarm runs it without a registry.
            assert spec["Image"] == image_id
            assert all(c.attrs["Image"] == image_id for c in containers)


def test_postgres_and_redis_are_pinned_to_the_labelled_node(swarm_stack: SwarmStack) -> None:
    client = docker.from_env()
    pinned = (
        ("postgres", "taskstack.postgres"),
        ("redis", "taskstack.redis"),
        ("repository", "taskstack.backup"),
    )
    for role, label in pinned:
        placement = swarm_stack.service(role).attrs["Spec"]["TaskTemplate"]["Placement"]
        assert placement["Constraints"] == [f"node.labels.{label}==true"]
        (task,) = swarm_stack.running_tasks(role)
        node = client.nodes.get(task["NodeID"])
        assert node.attrs["Spec"]["Labels"][label] == "true"


def test_credentials_are_secret_files_never_environment(swarm_stack: SwarmStack) -> None:
    for role in APP_ROLES:
        for container in swarm_stack.task_containers(role):
            env = "\n".join(container.attrs["Config"]["Env"])
            for name in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "FLOWER_BASIC_AUTH"):
                assert f"{name}=" not in env, (container.name, name)
            code, out = container.exec_run(["ls", "/run/secrets"])
            mounted = set(out.decode().split()) - {"flower_basic_auth"}
            assert mounted == set(CONNECTION_FILES[role]), (container.name, mounted)
            for file_name in CONNECTION_FILES[role]:
                code, out = container.exec_run(
                    ["stat", "-c", "%a %u:%g", f"/run/secrets/{file_name}"]
                )
                assert code == 0, out
                assert out.decode().strip() == "400 10001:10001", (container.name, file_name)
    (postgres,) = swarm_stack.task_containers("postgres")
    postgres_env = postgres.attrs["Config"]["Env"]
    assert "POSTGRES_PASSWORD_FILE=/run/secrets/postgres_password" in postgres_env
    assert not any(item.startswith("POSTGRES_PASSWORD=") for item in postgres_env)
    # Redis took its password from the secret file: a client without it is refused.
    (redis,) = swarm_stack.task_containers("redis")
    code, out = redis.exec_run(["redis-cli", "ping"])
    assert b"NOAUTH" in out, out
    code, out = redis.exec_run(
        ["sh", "-c", 'REDISCLI_AUTH="$(cat /run/secrets/redis_password)" redis-cli ping']
    )
    assert out.strip() == b"PONG", out


def test_overlays_are_encrypted_attachable_and_resolve_tasks_by_dns(
    swarm_stack: SwarmStack,
) -> None:
    client = docker.from_env()
    networks = {
        n.name: n.attrs
        for n in client.networks.list(filters={"label": f"{LABEL_STACK}={swarm_stack.name}"})
    }
    assert set(networks) == {
        f"taskstack-{swarm_stack.name}-app",
        f"taskstack-{swarm_stack.name}-data",
    }
    for attrs in networks.values():
        assert attrs["Driver"] == "overlay"
        assert attrs["Scope"] == "swarm"
        assert attrs["Attachable"] is True
        assert "encrypted" in attrs["Options"]
    assert networks[f"taskstack-{swarm_stack.name}-data"]["Internal"] is True
    # dnsrr: `postgres` resolves to the task's own address on the data overlay, no virtual IP.
    assert swarm_stack.service("postgres").attrs["Spec"]["EndpointSpec"]["Mode"] == "dnsrr"
    (postgres,) = swarm_stack.task_containers("postgres")
    task_address = postgres.attrs["NetworkSettings"]["Networks"][
        f"taskstack-{swarm_stack.name}-data"
    ]["IPAddress"]
    api = swarm_stack.task_containers("api")[0]
    code, out = api.exec_run(
        ["python", "-c", "import socket; print(socket.gethostbyname('postgres'))"]
    )
    assert code == 0, out
    assert out.decode().strip() == task_address


def test_a_task_is_running_only_once_its_healthcheck_passed(swarm_stack: SwarmStack) -> None:
    # What convergence relies on (the provider counts running tasks): a probe service whose check
    # passes only after 8 s must not be reported running before its container is healthy.
    client = docker.from_env()
    probe = client.services.create(
        swarm_stack.outputs["imageId"],
        command=["sh", "-c", "sleep 8; touch /tmp/ready; exec sleep 600"],
        name=f"taskstack-{swarm_stack.name}-health-probe",
        labels={STACK_LABEL: swarm_stack.name},
        container_labels={STACK_LABEL: swarm_stack.name},
        healthcheck=docker.types.Healthcheck(
            test=["CMD", "test", "-f", "/tmp/ready"],  # noqa: S108 - inside the probe container
            interval=1_000_000_000,
            retries=30,
        ),
    )
    observed: list[tuple[str, str]] = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            tasks = probe.tasks()
            if tasks and tasks[0]["Status"].get("ContainerStatus", {}).get("ContainerID"):
                task = tasks[0]
                container_id = task["Status"]["ContainerStatus"]["ContainerID"]
                try:
                    state = client.api.inspect_container(container_id)["State"]
                except docker.errors.NotFound:
                    state = {}
                health = (state.get("Health") or {}).get("Status", "none")
                # The task state is read after the container's health: running then implies the
                # container was healthy when the state was read.
                task_state = client.api.inspect_task(task["ID"])["Status"]["State"]
                observed.append((task_state, health))
                if task_state == "running":
                    break
            time.sleep(0.3)
    finally:
        probe.remove()
    assert observed, "the probe task never got a container"
    assert observed[-1][0] == "running", observed
    starting = [health for task_state, health in observed if task_state == "starting"]
    assert starting, observed
    assert set(starting) <= {"starting", "healthy"}, observed
    assert ("running", "starting") not in observed, observed


# -- the running stack
# -------------------------------------------------------------------------------------------


def test_a_second_up_changes_nothing(swarm_stack: SwarmStack) -> None:
    # Diffed against what the provider's Read wrote back (rehearsal/readback.py: durations in
    # shortDur form, tmpfs modes without the sticky bit, env as a map): no update, so no task rolls.
    tasks = {
        t["ID"] for role in ("postgres", "api", "worker") for t in swarm_stack.running_tasks(role)
    }
    assert swarm_stack.up().changes == []
    assert {
        t["ID"] for role in ("postgres", "api", "worker") for t in swarm_stack.running_tasks(role)
    } == tasks


def test_tutorial_flow_against_the_published_port(swarm_stack: SwarmStack) -> None:
    body = swarm_stack.submit_and_wait(42)
    assert body["result"] == {"item_id": 42, "status": "processed"}
    with swarm_stack.api() as client:
        assert client.get(f"/task/{uuid.uuid4()}").status_code == 404


def test_500_jobs_through_the_replicated_workers(swarm_stack: SwarmStack) -> None:
    ids = swarm_stack.submit_jobs(500, first_item=1000)
    assert _wait_all_succeeded(swarm_stack, ids, within=300) == {"succeeded": 500}
    by_container = _succeeded_by_container(swarm_stack)
    assert len(by_container) == 2
    ours = set(ids)
    assert all(done & ours for done in by_container.values()), {
        name: len(done & ours) for name, done in by_container.items()
    }
    assert set().union(*by_container.values()) >= ours


def test_beat_is_one_task_and_fires_its_periodic_task(swarm_stack: SwarmStack) -> None:
    (beat,) = swarm_stack.task_containers("beat")

    def sent_twice() -> bool:
        """beat sent requeue-stale-jobs twice"""
        logs = str(beat.logs().decode(errors="replace"))
        return logs.count("Sending due task requeue-stale-jobs") >= 2

    eventually(sent_twice, within=60)


# -- a release rolled out while jobs run
# -----------------------------------------------------------------------------


@dataclass
class Release:
    """What a client saw while `up` rolled a new release out."""

    probe: ProbeReport
    up_seconds: float = 0.0
    settled_seconds: float = 0.0
    settled_at: float = 0.0  # time.monotonic() when every rollout had ended
    old_worker_tasks: set[str] = field(default_factory=set)
    old_api_tasks: set[str] = field(default_factory=set)
    image_changed: bool = False


@pytest.fixture(scope="module")
def release(swarm_stack: SwarmStack) -> Iterator[Release]:
    """`up` with a new app image and a changed app setting (a new spec for every app service),
    while the probe (GET /health every 20 ms, POST /process every 50 ms) uses the API through the
    proxy. The new build context stays until the module ends, so later `up`s keep that image."""
    old_worker_tasks = {t["ID"] for t in swarm_stack.running_tasks("worker")}
    old_api_tasks = {t["ID"] for t in swarm_stack.running_tasks("api")}
    image_before = swarm_stack.outputs["imageId"]
    with new_release():
        with Probe(swarm_stack.api_url, first_item=100_000) as probe:
            time.sleep(3)  # jobs in flight before the rollout starts
            started = time.monotonic()
            swarm_stack.configure(
                appEnv=json.dumps(
                    [
                        "JOB_WORK_SECONDS=0.2",
                        "REAPER_INTERVAL_SECONDS=5",
                        "READINESS_TIMEOUT_SECONDS=3",
                    ]
                ),
            )
            up_seconds = time.monotonic() - started
            swarm_stack.wait_rollouts_settled((*APP_ROLES, "proxy"))
            settled_at = time.monotonic()
            time.sleep(3)  # and after it
        yield Release(
            probe=probe.report,
            up_seconds=up_seconds,
            settled_seconds=settled_at - started,
            settled_at=settled_at,
            old_worker_tasks=old_worker_tasks,
            old_api_tasks=old_api_tasks,
            image_changed=swarm_stack.outputs["imageId"] != image_before,
        )


def test_worker_rollout_while_jobs_run_loses_no_job(
    swarm_stack: SwarmStack, release: Release
) -> None:
    assert release.image_changed
    new_tasks = {t["ID"] for t in swarm_stack.running_tasks("worker")}
    assert len(new_tasks) == 2
    assert not new_tasks & release.old_worker_tasks  # every worker was replaced
    spec_env = swarm_stack.service("worker").attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"]
    assert "READINESS_TIMEOUT_SECONDS=3" in spec_env
    assert swarm_stack.service("worker").attrs["UpdateStatus"]["State"] == "completed"
    # The old workers stopped with a warm shutdown inside their grace period: exit code 0.
    client = docker.from_env()
    for task_id in release.old_worker_tasks:
        task = client.api.inspect_task(task_id)
        assert task["Status"]["State"] == "shutdown", task["Status"]
        assert task["Status"]["ContainerStatus"]["ExitCode"] == 0, task["Status"]
    accepted = release.probe.accepted
    assert len(accepted) >= 100, len(accepted)
    # Within the bound after the rollout ended; a late job's history is in the message.
    assert late_jobs(swarm_stack, accepted, deploy_ended=release.settled_at) == {}
    assert swarm_stack.job_statuses(accepted) == {"succeeded": len(accepted)}


def test_api_rollout_loses_no_request(swarm_stack: SwarmStack, release: Release) -> None:
    new_tasks = {t["ID"] for t in swarm_stack.running_tasks("api")}
    assert len(new_tasks) == 2
    assert not new_tasks & release.old_api_tasks
    report: dict[str, Any] = {
        "stack": swarm_stack.name,
        "when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "api_replicas": 2,
        "api_update_order": "start-first",
        "proxy": "HAProxy, one task, host-mode published port; API tasks publish nothing",
        "probe": "GET /health every 20 ms, POST /process every 50 ms, through the proxy",
        **release.probe.summary(),
        "release_up_seconds": round(release.up_seconds, 1),
        "release_settled_seconds": round(release.settled_seconds, 1),
    }
    write_report(ARTIFACTS / "swarm-rollout.json", report)
    assert release.probe.gets > 100, report
    assert release.probe.posts > 40, report
    assert release.probe.failed == 0, report


# -- scaling
# -----------------------------------------------------------------------------------------------


def test_scaling_workers_from_2_to_4_by_config(swarm_stack: SwarmStack) -> None:
    before = {t["ID"] for t in swarm_stack.running_tasks("worker")}
    swarm_stack.configure(workerReplicas="4")
    swarm_stack.wait_rollouts_settled(("worker",))
    # A scale: the two running workers stay, two are added (no rolling restart).
    assert before <= {t["ID"] for t in swarm_stack.running_tasks("worker")}
    assert swarm_stack.service("worker").attrs["Spec"]["Mode"]["Replicated"]["Replicas"] == 4
    containers = swarm_stack.task_containers("worker")
    assert len(containers) == 4
    assert all(c.attrs["State"]["Health"]["Status"] == "healthy" for c in containers)

    ids = swarm_stack.submit_jobs(400, first_item=200_000)
    assert _wait_all_succeeded(swarm_stack, ids, within=300) == {"succeeded": 400}
    ours = set(ids)
    by_container = {
        name: done & ours for name, done in _succeeded_by_container(swarm_stack).items()
    }
    assert len(by_container) == 4
    assert all(by_container.values()), {name: len(done) for name, done in by_container.items()}

    # Flower sees the four workers too, by task slot: worker-<slot>@<task container hostname>.
    expected = {
        f"worker-{c.attrs['Config']['Labels']['com.docker.swarm.task.name'].split('.')[1]}"
        f"@{c.attrs['Config']['Hostname']}"
        for c in containers
    }

    def listed() -> set[str] | None:
        """Flower's API lists the four workers"""
        response = httpx.get(
            f"{swarm_stack.flower_url}/api/workers",
            params={"refresh": "1"},
            auth=swarm_stack.flower_auth(),
            timeout=30,
        )
        assert response.status_code == 200, response.text
        workers = set(response.json())
        return workers if workers >= expected else None

    eventually(listed, within=60, every=3)

    def scraped() -> set[str] | None:
        """Prometheus scrapes each of the four workers (`tasks.worker`), not one behind the VIP"""
        response = httpx.get(
            f"{swarm_stack.outputs['prometheusUrl']}/api/v1/targets",
            params={"state": "active"},
            auth=swarm_stack.flower_auth(),
            timeout=30,
        )
        assert response.status_code == 200, response.text
        up = {
            target["labels"]["instance"].split(":")[0]
            for target in response.json()["data"]["activeTargets"]
            if target["labels"]["job"] == "worker" and target["health"] == "up"
        }
        return up if len(up) == 4 else None

    addresses = eventually(scraped, within=120, every=5)
    own = {
        network["IPAddress"]
        for container in containers
        for network in container.attrs["NetworkSettings"]["Networks"].values()
    }
    assert addresses <= own


# -- a failed migration
# ----------------------------------------------------------------------------------------


def test_a_failed_migration_stops_up_and_runs_again_once_fixed(swarm_stack: SwarmStack) -> None:
    # From a stack without services (volumes kept, so PostgreSQL keeps the password it was
    # initialised with); a stack config that now gives another points the migration at a wrong
    # password. A shorter convergence timeout for this `up` only, so the failure comes sooner.
    swarm_stack.down()
    wrong = {"postgresPassword": uuid.uuid4().hex}
    failed = swarm_stack.up({"waitTimeoutSeconds": "60"}, wrong, check=False)
    assert not failed.ok
    assert "did not converge" in failed.log
    assert "password authentication failed" in failed.log  # the migration's own output
    # Nothing that needs the schema was deployed; the migration service was deleted.
    client = docker.from_env()
    services = {
        s.name for s in client.services.list(filters={"label": f"{LABEL_STACK}={swarm_stack.name}"})
    }
    for role in APP_ROLES:
        assert f"taskstack-{swarm_stack.name}-{role}" not in services, services
    assert f"taskstack-{swarm_stack.name}-postgres" in services

    # Fixed (the stack's own password again): the same `up`, no --replace, runs it and passes.
    fixed = swarm_stack.up()
    assert any(
        step.startswith("create ") and step.split()[1].endswith("::migrate")
        for step in fixed.changes
    ), fixed.log
    assert swarm_stack.running_tasks("migrate")
    assert swarm_stack.submit_and_wait(77)["status"] == "SUCCESS"

    # And once more: nothing changes.
    assert swarm_stack.up().changes == []
