"""What the end-to-end suites check the same way: a deploy under the probe (deploy/probe.py), the
Chromium that takes their screenshots, the steady load of the database-loss drills."""

from __future__ import annotations

import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx

from deploy.stack import eventually

# What a prod stack promises (docs/backup.md): a commit is in the repository within a minute.
RPO_SECONDS = 60
LOAD_PER_SECOND = 20


def assert_deploy_kept_its_promises(report: dict[str, Any]) -> None:
    """No failed request, every API copy and worker replaced, and every accepted job finished
    within the bound after the deploy ended; a late job's history is in the message."""
    assert report["image_changed"], report
    assert report["api_and_workers_all_new"], report
    assert report["gets"] > 100, report
    assert report["posts"] > 40, report
    assert report["failed_requests"] == 0, report
    assert report["late_jobs"] == {}, report["late_jobs"]
    assert report["jobs"] == {"succeeded": report["jobs_accepted"]}, report


def chromium() -> str:
    found = shutil.which("chromium")
    assert found, (
        "Debian's chromium is not installed (.ci/run installs it: apt-get install chromium)"
    )
    return found


@dataclass
class Accepted:
    task_id: str
    answered_at: float


class Load:
    """LOAD_PER_SECOND POSTs a second from a pool of clients until stopped; what got a 202."""

    def __init__(self, api_url: str, first_item: int, headers: dict[str, str]) -> None:
        self.api_url, self.item, self.headers = api_url, first_item, headers
        self.accepted: list[Accepted] = []
        self.refused = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.lock = threading.Lock()

    def _post(self, item: int) -> None:
        try:
            response = httpx.post(
                f"{self.api_url}/process/{item}", headers=self.headers, timeout=10
            )
        except httpx.HTTPError:
            response = None
        with self.lock:
            if response is not None and response.status_code == 202:
                self.accepted.append(Accepted(response.json()["task_id"], time.time()))
            else:
                self.refused += 1

    def _run(self) -> None:
        with ThreadPoolExecutor(max_workers=16) as pool:
            start = time.monotonic()
            sent = 0
            while not self.stopped.is_set():
                time.sleep(max(0.0, start + sent / LOAD_PER_SECOND - time.monotonic()))
                pool.submit(self._post, self.item + sent)
                sent += 1

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopped.set()
        self.thread.join()


def archive_everything(stack: Any, within: float = 180) -> float:
    """Switch to a new WAL segment and wait until nothing waits to be archived (an operator who
    knows the time to restore to has usually waited longer than archive_timeout anyway); the
    seconds it took. `stack`: a deployed stack (deploy/stack.py) or the three-node one."""
    started = time.monotonic()
    stack.psql("SELECT pg_switch_wal()", user="postgres")

    def archived() -> bool:
        """every WAL segment is in the repository"""
        pending = "SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'"
        return str(stack.psql(pending, user="postgres")) == "0"

    eventually(archived, within=within)
    return round(time.monotonic() - started, 1)
