"""Figures read from the database and the worker logs while a scenario runs."""

from __future__ import annotations

from typing import Any

import psycopg

from tests.faults.servers import AppProcesses

# app/worker/tasks.py logs these when a delivery finds its job already finished (the effect is
# skipped).
IGNORED_DELIVERY = "is finished or unknown; ignoring this delivery"
EFFECT_ALREADY_APPLIED = "was finished by another delivery"
WORKER_LOST = "WorkerLostError"


def succeeded_count(dsn: str) -> int:
    try:
        with psycopg.connect(dsn, connect_timeout=5) as connection:
            row = connection.execute(
                "SELECT count(*) FROM jobs WHERE status = 'succeeded'"
            ).fetchone()
    except psycopg.OperationalError:
        return 0
    return int(row[0]) if row else 0


def effects_not_once(dsn: str) -> int:
    """Succeeded jobs whose recorded effect is not exactly the one result of their own item."""
    with psycopg.connect(dsn, connect_timeout=5) as connection:
        row = connection.execute(
            "SELECT count(*) FROM jobs WHERE status = 'succeeded' AND ("
            " result IS DISTINCT FROM jsonb_build_object('item_id', item_id, 'status', 'processed')"
            " OR finished_at IS NULL OR progress <> 100)"
        ).fetchone()
    return int(row[0]) if row else 0


def worker_log_figures(processes: AppProcesses, *workers: str) -> dict[str, Any]:
    logs = "".join(processes.log(name) for name in workers)
    return {
        "redundant_deliveries_ignored": logs.count(IGNORED_DELIVERY),
        "effects_skipped_already_applied": logs.count(EFFECT_ALREADY_APPLIED),
        "worker_lost_errors": logs.count(WORKER_LOST),
    }
