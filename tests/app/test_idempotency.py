"""Idempotency-Key on POST /process/{item_id} and POST /notifications (app/intake/idempotency.py): a
retry returns the first answer and creates nothing; a key reused for another request is a 422."""

import asyncio
import uuid

import httpx
import pytest
from sqlalchemy import text

from app.intake import group_commit
from app.storage.db import get_sync_engine
from tests.app.helpers import job_row

pytestmark = pytest.mark.anyio


def count(sql: str, **parameters: object) -> int:
    with get_sync_engine().connect() as connection:
        return int(connection.scalar(text(sql), parameters) or 0)


def jobs_of_item(item_id: int) -> int:
    return count("SELECT count(*) FROM jobs WHERE item_id = :item", item=item_id)


async def test_the_same_key_twice_returns_the_same_task_and_creates_nothing(
    client: httpx.AsyncClient,
) -> None:
    item = 2_000_000_001
    key = str(uuid.uuid4())
    first = await client.post(f"/process/{item}", headers={"Idempotency-Key": key})
    second = await client.post(f"/process/{item}", headers={"Idempotency-Key": key})
    assert first.status_code == second.status_code == 202
    assert first.json() == second.json()
    assert "idempotent-replayed" not in first.headers
    assert second.headers["idempotent-replayed"] == "true"
    assert jobs_of_item(item) == 1
    task_id = first.json()["task_id"]
    assert (
        count("SELECT count(*) FROM outbox WHERE CAST(:id AS uuid) = ANY(task_ids)", id=task_id)
        <= 1
    )


async def test_without_a_key_every_request_is_a_new_job(client: httpx.AsyncClient) -> None:
    item = 2_000_000_002
    first = await client.post(f"/process/{item}")
    second = await client.post(f"/process/{item}")
    assert first.json()["task_id"] != second.json()["task_id"]
    assert jobs_of_item(item) == 2


async def test_the_same_key_in_one_group_commit_creates_one_job(
    client: httpx.AsyncClient,
) -> None:
    item = 2_000_000_003
    key = str(uuid.uuid4())
    others = [client.post(f"/process/{item + 100 + n}") for n in range(8)]
    keyed = [client.post(f"/process/{item}", headers={"Idempotency-Key": key}) for _ in range(8)]
    responses = await asyncio.gather(*keyed, *others)
    assert {response.status_code for response in responses} == {202}
    assert len({response.json()["task_id"] for response in responses[:8]}) == 1
    assert jobs_of_item(item) == 1
    assert sum(jobs_of_item(item + 100 + n) for n in range(8)) == 8


async def test_the_same_key_with_another_item_is_422_and_says_why(
    client: httpx.AsyncClient,
) -> None:
    key = str(uuid.uuid4())
    assert (
        await client.post("/process/2000000004", headers={"Idempotency-Key": key})
    ).status_code == 202
    reused = await client.post("/process/2000000005", headers={"Idempotency-Key": key})
    assert reused.status_code == 422
    assert "already used with a different request" in reused.json()["detail"]
    assert jobs_of_item(2_000_000_005) == 0


async def test_the_same_key_after_the_first_answer_was_lost(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first request's row is committed but its answer never reaches the client (the
    connection dropped after the commit): the retry gets that job, nothing new is created."""
    item = 2_000_000_006
    key = str(uuid.uuid4())
    settle = group_commit._settle

    def answer_lost(entry: group_commit._Waiting, outcome: object) -> None:
        if entry.key == key and not entry.accepted.done():
            entry.accepted.set_exception(ConnectionResetError("client went away"))
            return
        settle(entry, outcome)  # type: ignore[arg-type]

    monkeypatch.setattr(group_commit, "_settle", answer_lost)
    with pytest.raises(ConnectionResetError):
        await client.post(f"/process/{item}", headers={"Idempotency-Key": key})
    monkeypatch.setattr(group_commit, "_settle", settle)
    with get_sync_engine().connect() as connection:
        (recorded,) = connection.scalars(
            text("SELECT id FROM jobs WHERE item_id = :item"), {"item": item}
        ).all()
    retry = await client.post(f"/process/{item}", headers={"Idempotency-Key": key})
    assert retry.status_code == 202
    assert retry.json()["task_id"] == str(recorded)
    assert retry.headers["idempotent-replayed"] == "true"
    assert jobs_of_item(item) == 1
    assert job_row(recorded) is not None


@pytest.mark.parametrize("key", ["", "has space", "x" * 256, "naïve"])
async def test_a_malformed_key_is_422_naming_the_header(
    client: httpx.AsyncClient, key: str
) -> None:
    response = await client.post("/process/1", headers=[(b"Idempotency-Key", key.encode("utf-8"))])
    assert response.status_code == 422
    assert "Idempotency-Key" in response.text


async def test_notifications_the_same_key_returns_the_same_task(
    client: httpx.AsyncClient,
) -> None:
    key = str(uuid.uuid4())
    body = {"user_id": 3, "message": "idempotent hello"}
    first = await client.post("/notifications", json=body, headers={"Idempotency-Key": key})
    # The same notification, spelt differently (key order, spacing): the same request.
    again = await client.post(
        "/notifications",
        content=b'{ "message": "idempotent hello", "user_id": 3 }',
        headers={"Idempotency-Key": key, "content-type": "application/json"},
    )
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert (
        count(
            "SELECT count(*) FROM idempotency_keys"
            " WHERE key = :key AND task_id = CAST(:id AS uuid)",
            key=key,
            id=first.json()["task_id"],
        )
        == 1
    )


async def test_notifications_the_same_key_with_another_body_is_422(
    client: httpx.AsyncClient,
) -> None:
    key = str(uuid.uuid4())
    first = await client.post(
        "/notifications", json={"user_id": 3, "message": "one"}, headers={"Idempotency-Key": key}
    )
    assert first.status_code == 202
    other = await client.post(
        "/notifications", json={"user_id": 3, "message": "two"}, headers={"Idempotency-Key": key}
    )
    assert other.status_code == 422
    assert "already used with a different request" in other.json()["detail"]


async def test_a_key_used_on_process_cannot_be_replayed_on_notifications(
    client: httpx.AsyncClient,
) -> None:
    key = str(uuid.uuid4())
    assert (
        await client.post("/process/2000000007", headers={"Idempotency-Key": key})
    ).status_code == 202
    other = await client.post(
        "/notifications", json={"user_id": 1, "message": "x"}, headers={"Idempotency-Key": key}
    )
    assert other.status_code == 422


def test_expired_keys_are_purged() -> None:
    from app.storage import jobs
    from app.storage.db import get_sync_sessionmaker

    key = f"old-{uuid.uuid4()}"
    with get_sync_engine().begin() as connection:
        connection.execute(
            text(
                "INSERT INTO idempotency_keys (key, fingerprint, task_id, created_at) "
                "VALUES (:key, '\\x00', gen_random_uuid(), now() - interval '25 hours')"
            ),
            {"key": key},
        )
    with get_sync_sessionmaker()() as session:
        assert jobs.purge_idempotency_keys(session, 24) >= 1
    assert count("SELECT count(*) FROM idempotency_keys WHERE key = :key", key=key) == 0
