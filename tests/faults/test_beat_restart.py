"""Beat restarted: no periodic task is sent, or run, twice for one tick.

A tick is observed twice: beat's log line `Sending due task requeue-stale-jobs` (the send, with its
time) and the worker's `requeue_stale_jobs[<task id>] received` / `succeeded` lines (the runs).
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from datetime import datetime

from tests.faults.measure import report
from tests.faults.servers import START_SECONDS, Stack, stop_process, wait_until

# Short here (the default is 60 s), to see several ticks on each side of the restart.
INTERVAL = 2.0
TICKS_EACH_SIDE = 4
# Beat's line in the app's text log format (app/logs.py): `<time> INFO beat <logger> <message>`.
SEND = re.compile(
    r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z INFO beat \S+ "
    r"Scheduler: Sending due task requeue-stale-jobs",
    re.MULTILINE,
)
RECEIVED = re.compile(r"Task app\.tasks\.requeue_stale_jobs\[([0-9a-f-]{36})\] received")
SUCCEEDED = re.compile(r"Task app\.tasks\.requeue_stale_jobs\[([0-9a-f-]{36})\] succeeded")


def _sends(log: str) -> list[datetime]:
    return [datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f") for stamp in SEND.findall(log)]


def test_beat_restart_sends_each_tick_once(stack: Stack) -> None:
    processes = stack.processes
    processes.env["REAPER_INTERVAL_SECONDS"] = str(INTERVAL)
    processes.start_worker("worker-1")
    first = processes.start_beat("beat-1")
    # Until the worker received the ticks (beat logs "Sending" before it publishes: a SIGTERM
    # right after the line could come before the message), then at once, mid-interval.
    wait_until(
        lambda: len(RECEIVED.findall(processes.log("worker-1"))) >= TICKS_EACH_SIDE,
        START_SECONDS + TICKS_EACH_SIDE * INTERVAL,
        f"{TICKS_EACH_SIDE} ticks before the restart",
        interval=0.02,
    )
    # SIGTERM, as `docker stop` or a rolling update does; the schedule file is kept (a volume).
    stop_process(first)
    processes.start_beat("beat-2")
    wait_until(
        lambda: (
            len(_sends(processes.log("beat-2"))) >= TICKS_EACH_SIDE
            and len(RECEIVED.findall(processes.log("worker-1")))
            >= len(_sends(processes.log("beat-1"))) + TICKS_EACH_SIDE
        ),
        START_SECONDS + TICKS_EACH_SIDE * INTERVAL,
        f"{TICKS_EACH_SIDE} ticks after the restart",
        interval=0.02,
    )
    stop_process(processes.started[-1])

    before, after = _sends(processes.log("beat-1")), _sends(processes.log("beat-2"))
    sends = before + after
    wait_until(
        lambda: len(RECEIVED.findall(processes.log("worker-1"))) >= len(sends),
        START_SECONDS,
        "every sent tick reached the worker",
    )
    worker_log = processes.log("worker-1")
    received = Counter(RECEIVED.findall(worker_log))
    runs = Counter(SUCCEEDED.findall(worker_log))
    gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(sends)]
    report(
        "beat restarted (SIGTERM)",
        interval_seconds=INTERVAL,
        ticks_sent_before_restart=len(before),
        ticks_sent_after_restart=len(after),
        deliveries=sum(received.values()),
        runs=sum(runs.values()),
        ticks_run_twice=sum(1 for count in runs.values() if count > 1),
        smallest_gap_between_sends_seconds=round(min(gaps), 3),
        gap_across_restart_seconds=round((after[0] - before[-1]).total_seconds(), 3),
    )
    # One send per tick: two sends for one tick would be (nearly) simultaneous.
    assert min(gaps) >= INTERVAL / 2, gaps
    # Each send reached the worker once and ran at most once.
    assert len(received) == len(sends)
    assert all(count == 1 for count in received.values())
    assert all(count == 1 for count in runs.values())
