"""Point-in-time recovery drills on the rehearsed prod stack (docs/backup.md, RELIABILITY.md):
lose the database's container and volume under load and restore to the end of the archive, then
restore to a time and redo it to another. Figures (jobs lost, the newest lost one's age, the time a
restore takes) are reported, never asserted as timings."""

from __future__ import annotations

import random
import time

import docker
import httpx
import pytest

from deploy.stack import DeployedStack, eventually
from infra.spec.backup import PGDATA
from tests.e2e.checks import RPO_SECONDS, Load, archive_everything
from tests.faults.measure import report

BATCH = 40
# Generous bounds for what must happen, not performance figures.
SETTLE_SECONDS = 180
RESTORE_SECONDS = 600


@pytest.fixture(scope="module")
def stack(prod_stack: DeployedStack) -> DeployedStack:
    def first_full_backup() -> bool:
        """the backup role has taken its first full backup"""
        return prod_stack.psql("SELECT count(*) FROM backup_status WHERE kind = 'full'") == "1"

    eventually(first_full_backup, within=SETTLE_SECONDS)
    return prod_stack


def job_ids(stack: DeployedStack) -> set[str]:
    return set(stack.psql("SELECT id FROM jobs").split())


def submit_and_drain(stack: DeployedStack, first_item: int) -> list[str]:
    ids = stack.submit_jobs(BATCH, first_item)
    eventually(lambda: not stack.unfinished_jobs(ids), within=SETTLE_SECONDS)
    return ids


def moment_between_batches(stack: DeployedStack) -> tuple[str, set[str]]:
    """A time T, with a second of quiet on each side, and the jobs committed before it."""
    time.sleep(1)
    at = stack.psql(
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US')"
    )
    committed = job_ids(stack)
    time.sleep(1)
    return f"{at}+00:00", committed


def restore(stack: DeployedStack, **config: str) -> float:
    """`pulumi up` with the restore settings; the seconds until the API answers ready."""
    started = time.monotonic()
    deployed = stack.configure(**config)
    assert deployed.ok, deployed.log[-3000:]

    def ready() -> bool:
        """the API is ready on the restored database"""
        try:
            return httpx.get(f"{stack.api_url}/health/ready", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    eventually(ready, within=RESTORE_SECONDS)
    return round(time.monotonic() - started, 1)


def lose_the_database(stack: DeployedStack) -> str:
    """The database's container and its volume, gone (with the backup role, which mounts it)."""
    client = docker.from_env()
    postgres = stack.data_container("postgres")
    (volume,) = [m["Name"] for m in postgres.attrs["Mounts"] if m["Destination"] == PGDATA]
    postgres.remove(force=True)
    for name in stack.names("backup"):
        client.containers.get(name).remove(force=True)
    client.volumes.get(volume).remove(force=True)
    return str(volume)


def test_lose_the_database_and_its_volume_under_load(stack: DeployedStack) -> None:
    # At a random moment, with at least a minute and a half of committed jobs behind it.
    loss_after = random.uniform(90, 120)
    with Load(stack.api_url, 100_001, stack.headers) as load:
        time.sleep(loss_after)
        lost_at = time.time()
        volume = lose_the_database(stack)
        time.sleep(5)  # the clients keep coming; the API refuses them now
    seconds = restore(stack, restoreTarget="latest")

    present = job_ids(stack)
    old_enough = [a for a in load.accepted if a.answered_at <= lost_at - RPO_SECONDS]
    missing_old = [a.task_id for a in old_enough if a.task_id not in present]
    lost = [a for a in load.accepted if a.task_id not in present]
    assert old_enough, "no job was accepted a minute before the loss"
    if missing_old:
        recovery = [
            line
            for line in stack.data_container("postgres").logs().decode().splitlines()
            if any(word in line for word in ("restore", "recovery", "timeline", "redo"))
        ]
        timeline = stack.psql("SELECT timeline_id FROM pg_control_checkpoint()")
        raise AssertionError(
            f"{len(missing_old)} of {len(old_enough)} jobs accepted {RPO_SECONDS}s before the "
            f"loss are missing; timeline {timeline}; the restore:\n" + "\n".join(recovery[-40:])
        )
    statuses = stack.job_statuses([a.task_id for a in old_enough])
    assert sum(statuses.values()) == len(old_enough)

    # The stack serves and drains again on the restored database.
    submit_and_drain(stack, 200_001)
    ages = [lost_at - a.answered_at for a in lost]
    report(
        "database container and volume lost under load, restored to latest",
        volume=volume,
        accepted=len(load.accepted),
        accepted_a_minute_before=len(old_enough),
        lost=len(lost),
        # The RPO: how far back before the loss an accepted job could be missing.
        oldest_lost_age_seconds=round(max(ages), 1) if ages else None,
        newest_lost_age_seconds=round(min(ages), 1) if ages else None,
        restored_statuses=statuses,
        restore_seconds=seconds,
    )


def test_restore_to_a_time_then_redo_it_to_another(stack: DeployedStack) -> None:
    submit_and_drain(stack, 1)
    first, before_first = moment_between_batches(stack)
    submit_and_drain(stack, 1001)
    second, before_second = moment_between_batches(stack)
    # The timeline the second time is on: a redo names it (restoreTimeline), since the first
    # restore branches a newer one from an earlier point.
    timeline = stack.psql("SELECT timeline_id FROM pg_control_checkpoint()")
    submit_and_drain(stack, 2001)
    archive_everything(stack)
    everything = job_ids(stack)
    assert before_first < before_second < everything

    # Into a fresh volume: the live one is kept (prod volumes are never deleted by an up).
    seconds = restore(stack, restoreTarget=first, postgresVolumeGeneration="1")
    assert job_ids(stack) == before_first
    # Declared, so a second `up` changes nothing.
    assert stack.up().changes == []

    # The repository still holds the history this restore branched from: redo it to a later time,
    # along the timeline that time is on.
    redo = restore(
        stack, restoreTarget=second, restoreTimeline=timeline, postgresVolumeGeneration="2"
    )
    assert job_ids(stack) == before_second

    # Taking the restore setting away restarts PostgreSQL on the restored data, keeping it.
    stack.overrides.pop("restoreTarget")
    stack.overrides.pop("restoreTimeline")
    deployed = stack.up()
    assert deployed.ok, deployed.log[-3000:]
    assert job_ids(stack) == before_second
    # ... and the stack serves and drains on it, and archives what it writes.
    submit_and_drain(stack, 3001)
    try:
        archive_everything(stack)
    except AssertionError as stuck:
        archiver = stack.psql("SELECT * FROM pg_stat_archiver")
        log = [
            line
            for line in stack.data_container("postgres").logs().decode().splitlines()
            if "archive" in line.lower() or "ERROR" in line
        ]
        raise AssertionError(f"{stuck}: {archiver}\n" + "\n".join(log[-30:])) from stuck
    report(
        "point-in-time restore",
        jobs_before_target=len(before_first),
        jobs_after_target_gone=len(everything - before_first),
        restore_seconds=seconds,
        redo_seconds=redo,
    )
