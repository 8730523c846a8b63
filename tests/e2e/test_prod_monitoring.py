"""Monitoring on the rehearsed prod stack (docs/observability.md): every target scraped, the job
counters equal to what was sent and drained, the "no worker" alert delivered to a real webhook
receiver, and Prometheus's own graph of the queue during a drain.

Bounds are generous deadlines for what must happen (an alert's `for` plus a minute), never
performance figures."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import docker.models.containers
import httpx
import pytest

from deploy.stack import ARTIFACTS, DeployedStack, eventually
from tests.e2e.checks import chromium

RECEIVER_ALIAS = "alert-receiver"
RECEIVER_PORT = 9095
# The prod rehearsal's alertWebhookUrl (rehearsal/stacks/Pulumi.rehearsal-prod.yaml).
RECEIVER_URL = f"http://{RECEIVER_ALIAS}:{RECEIVER_PORT}/alerts"
# Every scrape job and how many targets it has on the prod stack (Pulumi.prod.yaml: 2 API copies,
# 3 workers).
EXPECTED_TARGETS = {
    "api": 2,
    "worker": 3,
    "proxy": 1,
    "postgres-exporter": 1,
    "redis-exporter": 1,
    "prometheus": 1,
    "alertmanager": 1,
}
# NoWorkerAlive's `for` (infra/monitoring.py) plus the minute the issue allows, plus the scrape
# and the group wait before it.
NO_WORKER_ALERT_WITHIN = 60 + 60 + 30
JOBS = 1500
# The task the API enqueues for POST /process/{item_id}.
PROCESS_TASK = "process_data"

# A webhook receiver: prints each POSTed body as one line on its stdout (the test reads its logs).
_RECEIVER = """
import http.server
class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        print(body.decode(), flush=True)
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", PORT), Receiver).serve_forever()
""".replace("PORT", str(RECEIVER_PORT))


def _prometheus(stack: DeployedStack) -> httpx.Client:
    return httpx.Client(
        base_url=str(stack.outputs["prometheusUrl"]), auth=stack.flower_auth(), timeout=30
    )


def _query(stack: DeployedStack, expr: str) -> list[dict[str, Any]]:
    with _prometheus(stack) as client:
        answer = client.get("/api/v1/query", params={"query": expr})
    answer.raise_for_status()
    result: list[dict[str, Any]] = answer.json()["data"]["result"]
    return result


def _value(stack: DeployedStack, expr: str) -> float | None:
    result = _query(stack, expr)
    return float(result[0]["value"][1]) if result else None


def _targets(stack: DeployedStack) -> list[dict[str, Any]]:
    with _prometheus(stack) as client:
        answer = client.get("/api/v1/targets", params={"state": "active"})
    answer.raise_for_status()
    targets: list[dict[str, Any]] = answer.json()["data"]["activeTargets"]
    return targets


def test_the_consoles_ask_for_the_credentials(prod_stack: DeployedStack) -> None:
    for url in (prod_stack.outputs["prometheusUrl"], prod_stack.outputs["alertmanagerUrl"]):
        assert httpx.get(f"{url}/api/v1/status/buildinfo", timeout=10).status_code == 401
        wrong = httpx.get(f"{url}/-/healthy", auth=("admin", "not-the-password"), timeout=10)
        assert wrong.status_code == 401
    with _prometheus(prod_stack) as client:
        assert client.get("/-/healthy").status_code == 200


def test_every_scrape_target_is_up(prod_stack: DeployedStack) -> None:
    def all_up() -> list[dict[str, Any]] | None:
        """every expected target is discovered and its last scrape succeeded"""
        targets = _targets(prod_stack)
        per_job: dict[str, int] = {}
        for target in targets:
            if target["health"] == "up":
                job = target["labels"]["job"]
                per_job[job] = per_job.get(job, 0) + 1
        return targets if per_job == EXPECTED_TARGETS else None

    try:
        targets = eventually(all_up, within=120, every=5)
    except AssertionError:
        seen = [(t["labels"]["job"], t["health"], t["lastError"]) for t in _targets(prod_stack)]
        raise AssertionError(f"expected {EXPECTED_TARGETS}, scraped {seen}") from None
    assert all(target["health"] == "up" for target in targets), targets


def test_the_api_metrics_are_not_served_through_the_front_door(prod_stack: DeployedStack) -> None:
    assert httpx.get(f"{prod_stack.api_url}/metrics", timeout=10).status_code == 404


@pytest.fixture
def alert_receiver(prod_stack: DeployedStack) -> Iterator[docker.models.containers.Container]:
    """The webhook receiver, on the stack's app network under the name alertWebhookUrl gives."""
    client = docker.from_env()
    (alertmanager,) = prod_stack.names("alertmanager")
    networks = client.containers.get(alertmanager).attrs["NetworkSettings"]["Networks"]
    name = f"{prod_stack.name}-alert-receiver"
    for stale in client.containers.list(all=True, filters={"name": name}):
        stale.remove(force=True)
    receiver = client.containers.create(
        "python:3.13-slim",
        ["python", "-c", _RECEIVER],
        name=name,
        user="65534:65534",
        labels={"com.taskstack.test": "alert-receiver"},
    )
    client.networks.get(next(iter(networks))).connect(receiver, aliases=[RECEIVER_ALIAS])
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.remove(force=True)


def _received(receiver: docker.models.containers.Container) -> list[dict[str, Any]]:
    lines = receiver.logs(stdout=True, stderr=False).decode().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def _firing(receiver: docker.models.containers.Container, alert: str) -> bool:
    return any(
        item["labels"].get("alertname") == alert and item["status"] == "firing"
        for message in _received(receiver)
        for item in message.get("alerts", [])
    )


def _sum(stack: DeployedStack, expr: str) -> float:
    return _value(stack, f"sum({expr})") or 0.0


def _scraped_since(stack: DeployedStack, moment: float, job: str) -> bool:
    """Every copy of `job` has been scraped, successfully, after `moment` (Unix time). Counted,
    not only checked: a worker just restarted is missing from the targets until Prometheus asks
    DNS again."""
    fresh = sum(
        target["health"] == "up" and _scrape_time(target) > moment
        for target in _targets(stack)
        if target["labels"]["job"] == job
    )
    return bool(fresh == EXPECTED_TARGETS[job])


def _scrape_time(target: dict[str, Any]) -> float:
    # RFC 3339 with nanoseconds: fromisoformat takes microseconds at most.
    stamp = re.sub(r"(\.\d{6})\d*", r"\1", str(target["lastScrape"]))
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _settled(stack: DeployedStack, expr: str, job: str = "api") -> float:
    """`sum(expr)` once every copy of `job` (the role serving it) has been scraped after this
    call."""
    moment = time.time()
    eventually(lambda: _scraped_since(stack, moment, job), within=90, every=2)
    return _sum(stack, expr)


def _workers(stack: DeployedStack) -> list[docker.models.containers.Container]:
    return [stack.container(name) for name in stack.names("worker")]


def _post(stack: DeployedStack, count: int, first_item: int) -> list[str]:
    ids = stack.submit_jobs(count, first_item)
    assert len(ids) == count
    return ids


def test_no_worker_alert_counters_and_the_queue_graph_during_a_drain(
    prod_stack: DeployedStack, alert_receiver: docker.models.containers.Container
) -> None:
    """With the workers stopped: JOBS POSTs raise the enqueued and request counters by exactly
    JOBS, the queue fills and "no worker alive" reaches the receiver within its window; once the
    workers are back, the finished counter rises by JOBS, and the drain is photographed."""
    enqueued = "taskstack_jobs_enqueued_total"
    accepted = 'taskstack_http_requests_total{route="/process/{item_id}",status="202"}'
    finished = f'taskstack_jobs_finished_total{{task="{PROCESS_TASK}",status="succeeded"}}'
    before = {expr: _settled(prod_stack, expr) for expr in (enqueued, accepted)}

    workers = _workers(prod_stack)
    stopped_at = time.monotonic()
    for worker in workers:
        worker.stop(timeout=60)
    try:
        ids = _post(prod_stack, JOBS, first_item=900_000)
        assert _settled(prod_stack, enqueued) - before[enqueued] == JOBS
        assert _settled(prod_stack, accepted) - before[accepted] == JOBS
        eventually(
            lambda: (_value(prod_stack, "max(taskstack_queue_depth)") or 0) >= JOBS // 2,
            within=60,
            every=3,
        )
        eventually(
            lambda: _firing(alert_receiver, "NoWorkerAlive"),
            within=NO_WORKER_ALERT_WITHIN - (time.monotonic() - stopped_at),
            every=5,
        )
    finally:
        for worker in workers:
            worker.start()
    drain_started = time.time()
    eventually(lambda: not prod_stack.unfinished_jobs(ids), within=300, every=3)
    # Every worker was restarted above: its counters began again at 0 (a fresh tmpfs), so the
    # stack's sum is exactly what they finished since.
    assert _settled(prod_stack, finished, "worker") == JOBS
    _photograph_the_drain(prod_stack, since=drain_started - 120)


def _photograph_the_drain(stack: DeployedStack, since: float) -> None:
    """Prometheus's classic graph of the queue depth over the last minutes, in headless Chromium
    (Debian's Prometheus serves the classic UI only). SCREENSHOT_DIR: where the PNG goes (docs/img
    to refresh the docs' picture), artifacts/ by default."""
    user, password = stack.flower_auth()
    host = str(stack.outputs["prometheusUrl"]).removeprefix("http://")
    minutes = max(5, int((time.time() - since) / 60) + 2)
    query = urllib.parse.urlencode(
        {
            "g0.expr": "max by (queue) (taskstack_queue_depth)",
            "g0.tab": "0",
            "g0.range_input": f"{minutes}m",
        }
    )
    url = f"http://{user}:{password}@{host}/classic/graph?{query}"
    directory = Path(os.environ.get("SCREENSHOT_DIR") or ARTIFACTS)
    directory.mkdir(parents=True, exist_ok=True)
    screenshot = directory / "prometheus-queue-depth.png"
    screenshot.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                chromium(),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                f"--user-data-dir={profile}",
                "--window-size=1400,900",
                "--virtual-time-budget=10000",
                f"--screenshot={screenshot}",
                url,
            ],
            capture_output=True,
            timeout=120,
            check=True,
        )
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert screenshot.stat().st_size > 20_000
