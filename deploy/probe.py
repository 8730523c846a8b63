"""A client that keeps using the API while a deployment runs, and counts what failed.

`GET /health` every 20 ms and `POST /process/{id}` every 50 ms, each from its own thread with a
keep-alive connection, as a steady client would. A request fails when it raises (refused, reset,
timed out) or answers another status than expected; every accepted job's id is kept so that the
test can count the jobs afterwards. `new_release()` makes the next `up` build a new app image.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import httpx

from app.config import Settings
from deploy.stack import ARTIFACTS, DeployedStack
from rehearsal.runner import REPO_ROOT

# Inside the build context (the .dockerignore allowlist takes app/), not a .py file: the dev API's
# --reload watches *.py only, so writing it changes the image and nothing else.
RELEASE_MARKER = REPO_ROOT / "app" / "rehearsal-release.txt"
GET_EVERY = 0.020
POST_EVERY = 0.050


@contextmanager
def new_release() -> Iterator[str]:
    """A new build context while the block runs (so `up` builds a new image id); removed after."""
    release = uuid.uuid4().hex
    RELEASE_MARKER.write_text(f"{release}\n")
    try:
        yield release
    finally:
        RELEASE_MARKER.unlink(missing_ok=True)


@dataclass
class ProbeReport:
    gets: int = 0
    posts: int = 0
    failed_gets: list[str] = field(default_factory=list)
    failed_posts: list[str] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> int:
        return len(self.failed_gets) + len(self.failed_posts)

    def summary(self) -> dict[str, Any]:
        report = asdict(self)
        report["accepted"] = len(self.accepted)
        report["failed"] = self.failed
        return report


class Probe:
    """`with Probe(url) as probe:` runs both loops until the block ends; `probe.report` then."""

    def __init__(
        self,
        api_url: str,
        *,
        verify: bool | str = True,
        first_item: int = 500_000,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.api_url = api_url
        self.verify = verify
        self.headers = headers or {}
        self.report = ProbeReport()
        self._stop = threading.Event()
        self._item = first_item
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._loop, args=(GET_EVERY, self._get), daemon=True),
            threading.Thread(target=self._loop, args=(POST_EVERY, self._post), daemon=True),
        ]
        self._started = 0.0

    def __enter__(self) -> Probe:
        self._started = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        self.report.seconds = round(time.monotonic() - self._started, 1)

    def _loop(self, every: float, call: Any) -> None:
        with httpx.Client(
            base_url=self.api_url, headers=self.headers, timeout=10.0, verify=self.verify
        ) as client:
            next_at = time.monotonic()
            while not self._stop.is_set():
                call(client)
                next_at += every
                time.sleep(max(0.0, next_at - time.monotonic()))

    def _get(self, client: httpx.Client) -> None:
        self.report.gets += 1
        try:
            response = client.get("/health")
        except httpx.HTTPError as error:
            self.report.failed_gets.append(type(error).__name__)
            return
        if response.status_code != 200:
            self.report.failed_gets.append(f"HTTP {response.status_code}")

    def _post(self, client: httpx.Client) -> None:
        self.report.posts += 1
        self._item += 1
        try:
            response = client.post(f"/process/{self._item}")
        except httpx.HTTPError as error:
            self.report.failed_posts.append(type(error).__name__)
            return
        if response.status_code == 202:
            self.report.accepted.append(str(response.json()["task_id"]))
        else:
            self.report.failed_posts.append(f"HTTP {response.status_code}")


def write_report(path: Path, report: dict[str, Any]) -> None:
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{path.name}: {json.dumps(report, indent=2)}")


@dataclass
class SlowClient:
    """What a client sending its request one byte a second saw."""

    sent: int
    total: int
    answer: bytes
    seconds: float


def trickle_request(api_url: str, *, wait_bound: float) -> SlowClient:
    """Send a GET's headers one byte per second (the whole request would take ~70 s); stop when
    the server answers or closes. `wait_bound` only guards against a hang."""
    parts = urlsplit(api_url)
    request = b"GET /health HTTP/1.1\r\nHost: probe\r\nX-Slow: " + b"a" * 60 + b"\r\n\r\n"
    started = time.monotonic()
    sent = 0
    answer = b""
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80)) as conn:
        conn.settimeout(1.0)
        while sent < len(request) and time.monotonic() - started < wait_bound:
            try:
                conn.sendall(request[sent : sent + 1])
            except OSError:
                break
            sent += 1
            try:
                chunk = conn.recv(4096)
            except TimeoutError:
                continue  # nothing yet: the next byte
            except OSError:
                break
            answer += chunk
            break  # the server answered (or closed: an empty chunk)
    return SlowClient(sent, len(request), answer, round(time.monotonic() - started, 1))


# The promise a deploy keeps: once it has ended, every job accepted during it is finished within
# this many seconds plus its own run time (RELIABILITY.md, "Deploying a new image").
FINISHED_AFTER_DEPLOY_SECONDS = 15.0
JOB_RUN_SECONDS = float(Settings.model_fields["job_work_seconds"].default)


def late_jobs(stack: DeployedStack, ids: list[str], *, deploy_ended: float) -> dict[str, Any]:
    """Waits until every job of `ids` has finished, or the promise's bound after `deploy_ended`
    (a `time.monotonic()`) has passed; then the history of each job still unfinished (the first
    ten), empty when none is."""
    deadline = deploy_ended + FINISHED_AFTER_DEPLOY_SECONDS + JOB_RUN_SECONDS
    while True:
        unfinished = stack.unfinished_jobs(ids)
        if not unfinished or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    return {job: stack.job_history(job) for job in unfinished[:10]} | (
        {"more": len(unfinished) - 10} if len(unfinished) > 10 else {}
    )


def deploy_new_image_under_probe(
    stack: DeployedStack, settle: Callable[[], object] | None = None
) -> dict[str, Any]:
    """`up` with a new app image while the probe runs (then `settle()`, until a rollout that goes
    on after `up` returns has ended); what it saw, written to artifacts/deploy-<stack>.json: the
    failed requests, and every accepted job not finished within the promise's bound."""
    before = {role: set(stack.names(role)) for role in ("api", "worker")}
    image_before = stack.outputs["imageId"]
    with new_release(), Probe(stack.api_url, headers=stack.headers) as probe:
        time.sleep(2)  # requests and jobs in flight before the deployment starts
        started = time.monotonic()
        completed = stack.up()
        if settle is not None:
            settle()
        deploy_ended = time.monotonic()
        time.sleep(2)  # and after it
    result = probe.report
    late = late_jobs(stack, result.accepted, deploy_ended=deploy_ended)
    after = {role: set(stack.names(role)) for role in ("api", "worker")}
    report: dict[str, Any] = {
        "stack": stack.name,
        "when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "probe": f"GET /health every {GET_EVERY * 1000:.0f} ms, POST /process every "
        f"{POST_EVERY * 1000:.0f} ms, keep-alive, through the proxy",
        "image_changed": stack.outputs["imageId"] != image_before,
        "replaced": sorted(
            s.split()[1].rsplit("::", 1)[1] for s in completed.changes if s.startswith("replace ")
        ),
        "api_and_workers_all_new": all(not (after[r] & before[r]) for r in before),
        "up_seconds": round(deploy_ended - started, 1),
        **result.summary(),
        "failed_requests": result.failed,
        "jobs_accepted": len(result.accepted),
        "jobs": stack.job_statuses(result.accepted),
        "late_jobs": late,
    }
    write_report(ARTIFACTS / f"deploy-{stack.name}.json", report)
    return report
