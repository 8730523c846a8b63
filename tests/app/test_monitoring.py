"""Flower as the stack runs it (`celery -A app.monitoring flower`): /metrics needs the same
credentials as every other page; a plain `celery -A app.worker flower` is what it guards against."""

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
import tornado.ioloop
from flower.events import Events

from app import monitoring
from tests.app.environment import REPO_ROOT, stop_process

AUTH = ("monitor", "a-long-flower-password")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _flower(module: str) -> Iterator[str]:
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            module,
            "flower",
            f"--port={port}",
            "--address=127.0.0.1",
        ],
        cwd=REPO_ROOT,
        env=os.environ | {"FLOWER_BASIC_AUTH": ":".join(AUTH)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"{url}/healthcheck", timeout=2)
            break
        except httpx.TransportError:
            assert process.poll() is None, "flower exited"
            assert time.monotonic() < deadline, "flower did not answer"
            time.sleep(0.3)
    try:
        yield url
    finally:
        stop_process(process)


@pytest.fixture(scope="module")
def flower() -> Iterator[str]:
    yield from _flower("app.monitoring")


@pytest.fixture(scope="module")
def plain_flower() -> Iterator[str]:
    yield from _flower("app.worker")


def test_metrics_need_the_credentials(flower: str) -> None:
    assert httpx.get(f"{flower}/metrics", timeout=10).status_code == 401
    assert httpx.get(f"{flower}/metrics", auth=("monitor", "wrong"), timeout=10).status_code == 401
    allowed = httpx.get(f"{flower}/metrics", auth=AUTH, timeout=10)
    assert allowed.status_code == 200
    assert "flower_events_total" in allowed.text or "# HELP" in allowed.text


def test_other_pages_as_before(flower: str) -> None:
    assert httpx.get(f"{flower}/api/workers", timeout=10).status_code == 401
    assert httpx.get(f"{flower}/healthcheck", timeout=10).text == "OK"


def test_flower_on_its_own_serves_metrics_to_anyone(plain_flower: str) -> None:
    """Why app.monitoring exists: Flower 2.2 leaves /metrics open under --basic-auth."""
    assert httpx.get(f"{plain_flower}/metrics", timeout=10).status_code == 200


def test_events_beyond_the_backlog_are_dropped_and_the_rest_applied() -> None:
    """Flower's event thread queues every event on the IOLoop with no bound; app.monitoring
    bounds what waits there. A loop that is not running plays one that falls behind."""
    loop = tornado.ioloop.IOLoop(make_current=False)
    events = Events(monitoring.celery_app, loop, enable_events=False, max_tasks_in_memory=100)
    limit, extra = monitoring.backlog.limit, 25
    dropped_before = monitoring.backlog.dropped
    now = time.time()
    for n in range(limit + extra):
        events.on_event(
            {
                "type": "task-received",
                "uuid": f"task-{n}",
                "name": "t",
                "hostname": "w@h",
                "timestamp": now,
                "local_received": now,
                "clock": n + 1,
            }
        )
    assert monitoring.backlog.waiting == limit
    assert monitoring.backlog.dropped - dropped_before == extra

    loop.run_sync(lambda: None)  # runs the queued callbacks first
    loop.close()
    assert monitoring.backlog.waiting == 0
    # Flower's own --max_tasks keeps the newest 100 of what was applied.
    assert len(events.state.tasks) == 100
    assert f"task-{limit - 1}" in events.state.tasks
