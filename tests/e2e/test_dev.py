"""The dev stack, rehearsed on the Docker engine: every role, the tutorial, load, beat, Flower, a
stopped worker, the image, and a migration that fails."""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import docker
import httpx
import pytest

from deploy.probe import deploy_new_image_under_probe
from deploy.stack import ARTIFACTS, SUCCEEDED_LINE, DeployedStack, eventually
from infra.spec import APP_ROLES, ROLES
from rehearsal.runner import REPO_ROOT
from tests.e2e.checks import assert_deploy_kept_its_promises, chromium

GATED = tuple(role for role in APP_ROLES if role != "migrate")  # behind the migration gate


def test_every_role_runs_healthy(dev_stack: DeployedStack) -> None:
    state = {
        name: dev_stack.container(name).attrs["State"]
        for role in ROLES
        for name in dev_stack.names(role)
    }
    (migrate,) = dev_stack.names("migrate")
    assert state[migrate]["Status"] == "exited"
    assert state[migrate]["ExitCode"] == 0
    for role in ("postgres", "redis", "api", "worker", "proxy"):
        for name in dev_stack.names(role):
            assert state[name]["Health"]["Status"] == "healthy", name
    assert len(dev_stack.names("worker")) == 2
    assert len(dev_stack.names("api")) == 2
    for role in ("beat", "flower"):
        (name,) = dev_stack.names(role)
        assert state[name]["Running"] is True, name
    # The image the containers run is the one built from the Dockerfile for this up.
    api = dev_stack.names("api")[0]
    assert dev_stack.container(api).attrs["Image"] == dev_stack.outputs["imageId"]


def test_a_second_up_changes_nothing(dev_stack: DeployedStack) -> None:
    image_before = dev_stack.outputs["imageId"]
    second = dev_stack.up()
    assert dev_stack.outputs["imageId"] == image_before, "the build context changed between ups"
    # Diffed against what the provider's Read wrote back (rehearsal/readback.py): nothing.
    assert second.changes == []


def test_tutorial_flow_against_the_published_port(dev_stack: DeployedStack) -> None:
    body = dev_stack.submit_and_wait(42)
    assert body["result"] == {"item_id": 42, "status": "processed"}
    with dev_stack.api() as client:
        unknown = client.get(f"/task/{uuid.uuid4()}")
    assert unknown.status_code == 404


def test_the_dev_proxy_logs_every_request(dev_stack: DeployedStack) -> None:
    # Pulumi.dev.yaml sets proxyAccessLog "all"; prod logs only the abnormal ones (test_prod).
    marker = f"/task/{uuid.uuid4()}"
    with dev_stack.api() as client:
        assert client.get(marker).status_code == 404
    (proxy,) = dev_stack.names("proxy")

    def logged() -> bool:
        """the 404 in the proxy's log"""
        return f"GET {marker} HTTP/1.1" in dev_stack.logs(proxy)

    assert eventually(logged, within=10)


def test_500_jobs_through_two_workers(dev_stack: DeployedStack) -> None:
    ids = dev_stack.submit_jobs(500, first_item=1000)

    def all_finished() -> dict[str, int] | None:
        """all 500 jobs finished"""
        statuses = dev_stack.job_statuses(ids)
        finished = statuses.get("succeeded", 0) + statuses.get("failed", 0)
        return statuses if finished == 500 else None

    assert eventually(all_finished, within=600, every=2) == {"succeeded": 500}
    # Both workers took a share, and together they ran every one.
    by_worker = {
        name: set(SUCCEEDED_LINE.findall(dev_stack.logs(name)))
        for name in dev_stack.names("worker")
    }
    ours = set(ids)
    assert all(done & ours for done in by_worker.values()), {
        n: len(d) for n, d in by_worker.items()
    }
    assert set().union(*by_worker.values()) >= ours


def test_beat_fires_its_periodic_task_on_the_configured_schedule(dev_stack: DeployedStack) -> None:
    (beat,) = dev_stack.names("beat")

    def sent_twice() -> bool:
        """beat sent requeue-stale-jobs at least twice"""
        logs = dev_stack.logs(beat)
        return logs.count("Sending due task requeue-stale-jobs") >= 2

    # REAPER_INTERVAL_SECONDS=5 (rehearsal/stacks/Pulumi.rehearsal-dev.yaml): the default would be a
    # minute apart.
    eventually(sent_twice, within=60)

    def ran_on_a_worker() -> bool:
        """a worker ran app.tasks.requeue_stale_jobs"""
        return any(
            bool(re.search(r"app\.tasks\.requeue_stale_jobs\[[0-9a-f-]+\] succeeded", logs))
            for logs in (dev_stack.logs(n) for n in dev_stack.names("worker"))
        )

    eventually(ran_on_a_worker, within=60)


def _worker_hostnames(stack: DeployedStack) -> set[str]:
    # Celery node names as the program sets them: worker-<copy>@<container hostname>.
    names = set()
    for name in stack.names("worker"):
        config = stack.container(name).attrs["Config"]
        env = dict(entry.split("=", 1) for entry in config["Env"])
        assert re.fullmatch(r"worker-\d+@%h", env["CELERY_WORKER_HOSTNAME"]), env
        names.add(env["CELERY_WORKER_HOSTNAME"].replace("%h", config["Hostname"]))
    assert len(names) == len(stack.names("worker"))
    return names


def test_flower_api_lists_both_workers(dev_stack: DeployedStack) -> None:
    expected = _worker_hostnames(dev_stack)

    def listed() -> set[str] | None:
        """Flower's API lists both workers"""
        response = httpx.get(
            f"{dev_stack.flower_url}/api/workers",
            params={"refresh": "1"},
            auth=dev_stack.flower_auth(),
            timeout=30,
        )
        assert response.status_code == 200, response.text
        workers = set(response.json())
        return workers if workers >= expected else None

    assert eventually(listed, within=60, every=3) == expected


def test_flower_dashboard_in_headless_chromium(dev_stack: DeployedStack) -> None:
    user, password = dev_stack.flower_auth()
    host = dev_stack.flower_url.removeprefix("http://")
    # Credentials in the URL: Chromium answers the basic-auth challenge of the top-level page.
    url = f"http://{user}:{password}@{host}/workers"
    screenshot = ARTIFACTS / "flower-dashboard.png"
    screenshot.unlink(missing_ok=True)
    expected = _worker_hostnames(dev_stack)
    with tempfile.TemporaryDirectory() as profile:
        flags = [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            f"--user-data-dir={profile}",
            "--window-size=1400,900",
            # Let the dashboard's scripts fill the table before the page is captured.
            "--virtual-time-budget=10000",
        ]

        def shows_workers() -> str | None:
            """the dashboard shows both workers"""
            dom = subprocess.run(
                [*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120
            ).stdout
            return dom if all(name in dom for name in expected) else None

        eventually(shows_workers, within=90, every=3)
        subprocess.run(
            [*flags, f"--screenshot={screenshot}", url],
            capture_output=True,
            timeout=120,
            check=True,
        )
    assert screenshot.stat().st_size > 10_000
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_stopped_worker_finishes_its_jobs_and_leaves_none_started(
    dev_stack: DeployedStack,
) -> None:
    worker_name = dev_stack.names("worker")[0]
    worker = dev_stack.container(worker_name)
    ids = dev_stack.submit_jobs(200, first_item=5000)

    def running() -> bool:
        """jobs of the batch are running"""
        return dev_stack.job_statuses(ids).get("started", 0) > 0

    eventually(running, within=60, every=0.2)
    # `docker stop`: SIGTERM, then the container's own stop timeout before a kill.
    worker.stop()
    worker.reload()
    try:
        # 0, not 137: Celery's warm shutdown finished the tasks in hand within the stop timeout.
        assert worker.attrs["State"]["ExitCode"] == 0
        assert "warm shutdown" in dev_stack.logs(worker_name).lower()

        def drained() -> dict[str, int] | None:
            """the batch drained through the remaining worker"""
            statuses = dev_stack.job_statuses(ids)
            return statuses if statuses.get("succeeded", 0) == 200 else None

        assert eventually(drained, within=300, every=2) == {"succeeded": 200}
    finally:
        worker.start()


def test_image_size_user_and_hadolint(dev_stack: DeployedStack) -> None:
    image = docker.from_env().images.get(dev_stack.image_name)
    size_mb = image.attrs["Size"] / 1_000_000
    user = image.attrs["Config"]["User"]
    api = dev_stack.names("api")[0]
    exit_code, identity = dev_stack.container(api).exec_run(["id"])
    assert exit_code == 0
    report = (
        f"image {dev_stack.image_name} ({image.id})\n"
        f"size: {size_mb:.0f} MB\n"
        f"configured user: {user}\n"
        f"api process identity: {identity.decode().strip()}\n"
    )
    (ARTIFACTS / "image-report.txt").write_text(report)
    print(report)
    assert user == "10001:10001"
    assert identity.decode().startswith("uid=10001(app) gid=10001(app)")
    hadolint = Path(sys.executable).parent / "hadolint"
    linted = subprocess.run(
        [str(hadolint), "Dockerfile"], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr


@pytest.mark.parametrize("role", GATED)
def test_app_roles_exist_before_the_failed_migration_case(
    dev_stack: DeployedStack, role: str
) -> None:
    # The control for the next test: these containers do exist after a good up.
    assert dev_stack.names(role)
    for name in dev_stack.names(role):
        assert dev_stack.container(name).attrs["State"]["Running"] is True


def test_a_failed_migration_stops_up_before_the_app_roles(dev_stack: DeployedStack) -> None:
    # The data volume keeps the password PostgreSQL was initialised with; a stack config that now
    # gives another one points the migration at a wrong password.
    dev_stack.down()
    wrong = {"postgresPassword": secrets.token_urlsafe(18)}
    failed = dev_stack.up(secrets=wrong, check=False)

    assert not failed.ok
    assert "the migration (alembic upgrade head) exited with code" in failed.log
    assert "password authentication failed" in failed.log
    roles = {c.labels.get("com.taskstack.role") for c in dev_stack.all_containers()}
    # Nothing behind the gate, nor the proxy in front of the API.
    assert not roles & {*GATED, "proxy"}, roles
    assert {"postgres", "redis", "migrate"} <= roles


def _set_database_password(stack: DeployedStack, password: str) -> None:
    """Change the administrator's PostgreSQL password inside the database (an outside cause: the
    stack's configuration stays as it is); the migration connects as the administrator to make
    the app's role. Over the container's own socket, which trusts local users."""
    (postgres,) = stack.names("postgres")
    exit_code, output = stack.container(postgres).exec_run(
        [
            "psql",
            "-U",
            "postgres",
            "-d",
            "taskstack",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            f"ALTER ROLE postgres PASSWORD '{password}'",
        ]
    )
    assert exit_code == 0, output.decode()


def test_a_failed_migration_runs_again_once_its_cause_is_fixed(dev_stack: DeployedStack) -> None:
    # Back to a good stack after the previous test.
    dev_stack.up()
    (migrate,) = dev_stack.names("migrate")
    url = dev_stack.secret_files(migrate)["admin_database_url"]
    password = url.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
    gated_before = {c.name: c.id for c in dev_stack.all_containers() if _gated(dev_stack, c.name)}
    # A release (a changed app setting: the migration runs again) while the database refuses the
    # stack's password: the cause is outside the stack's configuration.
    release = {"appEnv": '["JOB_WORK_SECONDS=0.2","REAPER_INTERVAL_SECONDS=5","JOB_MAX_RETRIES=4"]'}
    _set_database_password(dev_stack, secrets.token_urlsafe(18))
    try:
        failed = dev_stack.up(release, check=False)
    finally:
        _set_database_password(dev_stack, password)  # the fix
    assert not failed.ok
    assert "the migration (alembic upgrade head) exited with code" in failed.log
    assert "password authentication failed" in failed.log
    # Nothing that needs the schema was deployed: the app containers are the ones from before.
    assert {
        c.name: c.id for c in dev_stack.all_containers() if _gated(dev_stack, c.name)
    } == gated_before

    # The cause fixed, the same `up`, no --replace: the migration runs again and passes.
    steps = dev_stack.up(release).changes
    assert any(
        step.startswith("replace ") and step.split()[1].endswith("::migrate") for step in steps
    ), steps
    (migrate,) = dev_stack.names("migrate")
    assert dev_stack.container(migrate).attrs["State"]["ExitCode"] == 0
    api = dev_stack.names("api")[0]
    assert "JOB_MAX_RETRIES=4" in dev_stack.container(api).attrs["Config"]["Env"]

    # And once more: nothing changes.
    assert dev_stack.up(release).changes == []


def _gated(stack: DeployedStack, name: str) -> bool:
    return stack.container(name).labels.get("com.taskstack.role") in GATED


def test_a_new_image_is_deployed_without_a_failed_request_or_a_late_job(
    dev_stack: DeployedStack,
) -> None:
    report = deploy_new_image_under_probe(dev_stack)
    assert {"api-1", "api-2", "worker-1", "worker-2"} <= set(report["replaced"]), report
    assert_deploy_kept_its_promises(report)
