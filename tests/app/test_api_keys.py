"""API keys (app/api/auth.py, app/storage/api_keys.py, `python -m app.keys`): every endpoint but
the health checks and /metrics needs a usable key, each client sees only its own jobs (also
through the finished-job cache) and its own Idempotency-Keys, each key's rate and concurrency are
limited, and GET /jobs pages by cursor. Against the run's PostgreSQL and Redis, with an app made
with AUTH_REQUIRED on beside the default one (off)."""

import asyncio
import hashlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import anyio
import httpx
import psycopg
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app import keys as keys_command
from app.api.auth import get_key_directory
from app.api.finished_jobs import get_finished_job_cache
from app.config import get_settings
from app.main import create_app
from app.storage import api_keys, jobs
from app.storage.db import get_session, get_sync_engine
from app.storage.models import ANONYMOUS_CLIENT, JobStatus
from tests.app.environment import REPO_ROOT, free_port, stop_process
from tests.app.helpers import wait_for_health

pytestmark = pytest.mark.anyio

# Generous: a bound on polling, not a measurement.
SETTLE_SECONDS = 30
OPEN_PATHS = ("/health", "/health/ready", "/metrics")


@dataclass(frozen=True)
class Key:
    id: int
    name: str
    key: str

    @property
    def header(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def make_key(
    *,
    rate_per_second: float | None = None,
    burst: int | None = None,
    max_concurrent: int | None = None,
) -> Key:
    """A key of its own for the test, usable at once (every process's copy is reread)."""
    name = f"test-{uuid.uuid4()}"
    with psycopg.connect(get_settings().database_libpq_url, autocommit=True) as connection:
        record, key = api_keys.create(
            connection,
            name,
            rate_per_second=rate_per_second,
            burst=burst,
            max_concurrent=max_concurrent,
        )
    get_key_directory().expire()
    return Key(record.id, name, key)


def auth_app(**settings: object) -> FastAPI:
    return create_app(get_settings().model_copy(update={"auth_required": True, **settings}))


def http(app: FastAPI, key: Key | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://testserver",
        headers=key.header if key else None,
    )


@pytest.fixture
async def app_on(client: httpx.AsyncClient) -> AsyncIterator[FastAPI]:
    """An app with AUTH_REQUIRED on; `client` (the default app, off) closes the pools after."""
    app = auth_app()
    yield app
    app.dependency_overrides.clear()


def until(condition: Callable[[], Awaitable[bool]]) -> Awaitable[None]:
    async def poll() -> None:
        deadline = time.monotonic() + SETTLE_SECONDS
        while not await condition():
            assert time.monotonic() < deadline, "not within the bound"
            await anyio.sleep(0.05)

    return poll()


def finish(job_id: str) -> None:
    with get_sync_engine().begin() as connection:
        connection.execute(
            text(
                "UPDATE jobs SET status = 'succeeded', progress = 100, result = '{\"ok\": 1}',"
                " finished_at = now() WHERE id = :id"
            ),
            {"id": job_id},
        )


def every_endpoint() -> list[tuple[str, str, dict[str, object]]]:
    return [
        ("POST", "/process/1", {}),
        ("GET", f"/task/{uuid.uuid4()}", {}),
        ("GET", "/jobs", {}),
        ("POST", "/notifications", {"json": {"user_id": 1, "message": "hi"}}),
        ("GET", "/docs", {}),
        ("GET", "/redoc", {}),
        ("GET", "/openapi.json", {}),
    ]


async def test_every_endpoint_refuses_a_missing_or_wrong_key_with_401(app_on: FastAPI) -> None:
    wrong = Key(0, "wrong", api_keys.new_key())
    # The right prefix, the wrong rest: compared, refused.
    good = make_key()
    same_prefix = Key(0, "same-prefix", good.key[: api_keys.PREFIX_LENGTH] + "x" * 43)
    async with http(app_on) as anonymous:
        for method, path, extra in every_endpoint():
            missing = await anonymous.request(method, path, **extra)  # type: ignore[arg-type]
            assert missing.status_code == 401, (path, missing.text)
            assert missing.headers["www-authenticate"] == 'Bearer realm="taskstack"'
            assert "API key is required" in missing.json()["detail"]
            basic = await anonymous.request(
                method,
                path,
                headers={"Authorization": "Basic dXNlcjpwYXNz"},
                **extra,  # type: ignore[arg-type]
            )
            assert basic.status_code == 401
            for bad in (wrong, same_prefix):
                refused = await anonymous.request(
                    method,
                    path,
                    headers=bad.header,
                    **extra,  # type: ignore[arg-type]
                )
                assert refused.status_code == 401, (path, refused.text)
                assert refused.headers["www-authenticate"] == (
                    'Bearer realm="taskstack", error="invalid_token"'
                )
        # The health checks and /metrics need none.
        for path in OPEN_PATHS:
            assert (await anonymous.get(path)).status_code == 200, path
    async with http(app_on, good) as allowed:
        for method, path, extra in every_endpoint():
            response = await allowed.request(method, path, **extra)  # type: ignore[arg-type]
            assert response.status_code in (200, 202, 404), (path, response.text)


async def test_a_key_revoked_by_the_command_is_refused_within_the_cache_time(
    app_on: FastAPI, capsys: pytest.CaptureFixture[str]
) -> None:
    key = make_key()
    async with http(app_on, key) as client:
        accepted = await client.post("/process/11")
        assert accepted.status_code == 202
        task_id = accepted.json()["task_id"]
        finish(task_id)
        assert (await client.get(f"/task/{task_id}")).status_code == 200  # now in the cache
        assert keys_command.main(["revoke", key.name]) == 0
        assert key.name in capsys.readouterr().out

        async def refused() -> bool:
            return (await client.get("/jobs")).status_code == 401

        await until(refused)
        for method, path, extra in [*every_endpoint(), ("GET", f"/task/{task_id}", {})]:
            response = await client.request(method, path, **extra)  # type: ignore[arg-type]
            assert response.status_code == 401, (path, response.text)
            assert 'error="invalid_token"' in response.headers["www-authenticate"]


async def test_another_clients_job_is_404_and_absent_from_its_list(
    app_on: FastAPI, client: httpx.AsyncClient
) -> None:
    owner, other = make_key(), make_key()
    async with http(app_on, owner) as a, http(app_on, other) as b:
        task_id = (await a.post("/process/21")).json()["task_id"]
        assert (await a.get(f"/task/{task_id}")).status_code == 200
        for reader in (b, client):  # another client, and the anonymous one (auth off)
            response = await reader.get(f"/task/{task_id}")
            assert response.status_code == 404
            # Word for word what an id never issued gets.
            assert response.json() == {"detail": f"no task {task_id}"}
            assert response.headers["cache-control"] == "no-store"
        assert task_id in {job["id"] for job in (await a.get("/jobs")).json()["items"]}
        assert task_id not in {job["id"] for job in (await b.get("/jobs")).json()["items"]}
        listed = (await client.get("/jobs", params={"limit": 500})).json()["items"]
        assert task_id not in {job["id"] for job in listed}
        # Filtered by status too.
        queued = (await b.get("/jobs", params={"status": "queued"})).json()["items"]
        assert task_id not in {job["id"] for job in queued}


async def test_the_finished_job_cache_answers_its_client_only(
    app_on: FastAPI, client: httpx.AsyncClient
) -> None:
    owner, other = make_key(), make_key()
    async with http(app_on, owner) as a, http(app_on, other) as b:
        task_id = (await a.post("/process/31")).json()["task_id"]
        finish(task_id)
        routed = await a.get(f"/task/{task_id}")
        assert routed.json()["status"] == "SUCCESS"
        # Kept for its client; a cache in front may keep it for that client only.
        cache = get_finished_job_cache()
        assert cache.get((owner.id, uuid.UUID(task_id)), datetime.now(UTC)) is not None
        cached = await a.get(f"/task/{task_id}")
        assert cached.content == routed.content
        for response in (routed, cached):
            assert response.headers["cache-control"].startswith("private, max-age=")
        for reader in (b, client):
            for _ in range(2):
                response = await reader.get(f"/task/{task_id}")
                assert response.status_code == 404
                assert response.json() == {"detail": f"no task {task_id}"}
    # Without keys, the answer may be kept by any cache, as before.
    anonymous_id = (await client.post("/process/32")).json()["task_id"]
    finish(anonymous_id)
    assert (
        (await client.get(f"/task/{anonymous_id}"))
        .headers["cache-control"]
        .startswith("public, max-age=")
    )
    assert cache.get((ANONYMOUS_CLIENT, uuid.UUID(anonymous_id)), datetime.now(UTC))


async def test_idempotency_keys_are_each_clients_own(app_on: FastAPI) -> None:
    first, second = make_key(), make_key()
    idempotency_key = str(uuid.uuid4())
    header = {"Idempotency-Key": idempotency_key}
    async with http(app_on, first) as a, http(app_on, second) as b:
        mine = await a.post("/process/41", headers=header)
        # Another client, the same key, even another item: its own new job, no 422, no replay.
        theirs = await b.post("/process/42", headers=header)
        assert mine.status_code == theirs.status_code == 202
        assert mine.json()["task_id"] != theirs.json()["task_id"]
        assert "idempotent-replayed" not in theirs.headers
        again = await a.post("/process/41", headers=header)
        assert again.json() == mine.json()
        assert again.headers["idempotent-replayed"] == "true"
        assert (await a.post("/process/43", headers=header)).status_code == 422
        # Within one group commit: both clients' first use of a key is each a job.
        shared = {"Idempotency-Key": str(uuid.uuid4())}
        together = await asyncio.gather(
            *(client.post("/process/44", headers=shared) for client in (a, b, a, b))
        )
        assert {response.status_code for response in together} == {202}
        ids = [response.json()["task_id"] for response in together]
        assert ids[0] == ids[2]
        assert ids[1] == ids[3]
        assert ids[0] != ids[1]
        # Notifications alike.
        note = {"Idempotency-Key": str(uuid.uuid4())}
        body = {"user_id": 1, "message": "scoped"}
        n1 = await a.post("/notifications", json=body, headers=note)
        n2 = await b.post("/notifications", json={"user_id": 2, "message": "x"}, headers=note)
        assert n1.status_code == n2.status_code == 202
        assert n1.json()["task_id"] != n2.json()["task_id"]
        n3 = await a.post("/notifications", json=body, headers=note)
        assert n3.json() == n1.json()
        assert n3.headers["idempotent-replayed"] == "true"


async def test_beyond_its_rate_a_key_gets_429_with_retry_after_across_processes(
    app_on: FastAPI,
) -> None:
    # One request per 100 s, two at once: the third within the test cannot be within the rate.
    limited, other = make_key(rate_per_second=0.01, burst=2), make_key()
    # A second app: a second process's middleware, the same limit in Redis.
    second_process = auth_app()
    async with (
        http(app_on, limited) as one,
        http(second_process, limited) as two,
        http(app_on, other) as bystander,
    ):
        assert (await one.get(f"/task/{uuid.uuid4()}")).status_code == 404
        assert (await two.get(f"/task/{uuid.uuid4()}")).status_code == 404
        for client in (one, two):
            refused = await client.get(f"/task/{uuid.uuid4()}")
            assert refused.status_code == 429, refused.text
            retry_after = refused.headers["retry-after"]
            assert retry_after.isdigit()
            assert int(retry_after) >= 1
            assert "rate" in refused.json()["detail"]
        # Another key is not held back by it.
        assert (await bystander.get(f"/task/{uuid.uuid4()}")).status_code == 404


async def test_beyond_its_concurrency_a_key_gets_429_others_still_get_in(app_on: FastAPI) -> None:
    limited, other = make_key(max_concurrent=2), make_key()
    release = asyncio.Event()
    entered = 0

    async def held_session() -> AsyncIterator[AsyncSession]:
        nonlocal entered
        entered += 1
        await release.wait()
        async for session in get_session():
            yield session

    app_on.dependency_overrides[get_session] = held_session
    async with (
        http(app_on, limited) as client,
        http(app_on, other) as bystander,
        anyio.create_task_group() as group,
    ):
        statuses: list[int] = []

        async def page() -> None:
            statuses.append((await client.get("/jobs")).status_code)

        for _ in range(2):
            group.start_soon(page)

        async def both_in() -> bool:
            return entered == 2

        await until(both_in)
        refused = await client.get(f"/task/{uuid.uuid4()}")
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"
        assert "2 requests of this key in flight" in refused.json()["detail"]
        assert (await bystander.get(f"/task/{uuid.uuid4()}")).status_code == 404
        release.set()
    assert statuses == [200, 200]
    # Once they finished, the key gets in again.
    async with http(app_on, limited) as client:
        assert (await client.get(f"/task/{uuid.uuid4()}")).status_code == 404


async def test_docs_off_are_404(client: httpx.AsyncClient) -> None:
    for app in (create_app(get_settings().model_copy(update={"api_docs": False})),):
        async with http(app) as off:
            for path in ("/docs", "/redoc", "/openapi.json"):
                assert (await off.get(path)).status_code == 404, path
            assert (await off.get("/health")).status_code == 200
    # The default app serves them (`API_DOCS` defaults on).
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert (await client.get(path)).status_code == 200, path


async def test_cursor_pages_walk_every_job_once_while_jobs_are_inserted(app_on: FastAPI) -> None:
    key = make_key(max_concurrent=100)
    async with http(app_on, key) as client:
        # Several group commits: many jobs share one created_at, the id orders them.
        existing = await asyncio.gather(*(client.post(f"/process/{n}") for n in range(60)))
        existing_ids = {response.json()["task_id"] for response in existing}
        seen: list[tuple[str, str]] = []  # (created_at, id)
        inserted: list[str] = []
        done = False

        async def insert_meanwhile() -> None:
            while not done:
                inserted.append((await client.post("/process/999")).json()["task_id"])

        async with anyio.create_task_group() as group:
            group.start_soon(insert_meanwhile)
            cursor = None
            while True:
                params: dict[str, str | int] = {"limit": 7}
                if cursor is not None:
                    params["cursor"] = cursor
                page = (await client.get("/jobs", params=params)).json()
                assert len(page["items"]) <= 7
                seen.extend((job["created_at"], job["id"]) for job in page["items"])
                cursor = page["next_cursor"]
                if cursor is None:
                    break
            done = True
        assert inserted  # the walk ran while jobs were being added
        ids = [job_id for _, job_id in seen]
        assert len(ids) == len(set(ids)), "a job was listed twice"
        assert existing_ids <= set(ids), "a job was skipped"
        assert set(ids) <= existing_ids | set(inserted)
        # Newest first along the whole walk.
        instants = [datetime.fromisoformat(created_at) for created_at, _ in seen]
        assert instants == sorted(instants, reverse=True)
        assert (await client.get("/jobs", params={"cursor": "garbage"})).status_code == 422


def test_a_page_is_a_range_of_an_index_whatever_its_depth() -> None:
    """The planner reads a page from the client's index in order: no sort, no scan of the rest."""
    after = (datetime.now(UTC), uuid.uuid4())
    for status, index in (
        (None, "ix_jobs_client_id_created_at_id"),
        (JobStatus.SUCCEEDED, "ix_jobs_client_id_status_created_at_id"),
    ):
        query = jobs.page_query(7, status, 51, after)
        sql = str(query.compile(get_sync_engine(), compile_kwargs={"literal_binds": True}))
        with get_sync_engine().begin() as connection:
            connection.execute(text("SET LOCAL enable_seqscan = off"))
            connection.execute(text("SET LOCAL enable_sort = off"))
            plan = "\n".join(connection.scalars(text(f"EXPLAIN {sql}")))
        assert index in plan, plan
        assert "Sort" not in plan, plan
        # The cursor bounds the range read, not a filter over every row before it.
        assert "created_at" in plan.split("Index Cond", 1)[1], plan


def run_keys_command(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.keys", *arguments],
        cwd=REPO_ROOT,
        env=os.environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def stored_rows() -> str:
    """Everything the api_keys table holds, as text."""
    with get_sync_engine().connect() as connection:
        rows = connection.execute(text("SELECT * FROM api_keys")).all()
    return repr(rows)


async def test_the_command_creates_lists_and_revokes_keys(app_on: FastAPI) -> None:
    name = f"cli-{uuid.uuid4()}"
    created = run_keys_command("create", name, "--rate-per-second", "5", "--max-concurrent", "3")
    assert created.returncode == 0, created.stderr
    (key,) = created.stdout.splitlines()
    assert key.startswith("tsk_")
    assert len(key) == 47
    assert "shown once" in created.stderr
    # Stored as its hash and prefix only.
    assert key not in stored_rows()
    with get_sync_engine().connect() as connection:
        stored = connection.execute(
            text(
                "SELECT prefix, rate_per_second, max_concurrent, burst FROM api_keys "
                "WHERE name = :name AND key_hash = :hash"
            ),
            {"name": name, "hash": hashlib.sha256(key.encode()).digest()},
        ).one()
    assert tuple(stored) == (key[:12], 5.0, 3, None)

    listed = run_keys_command("list")
    assert listed.returncode == 0, listed.stderr
    (line,) = [row for row in listed.stdout.splitlines() if f"\t{name}\t" in row]
    assert key not in listed.stdout
    assert hashlib.sha256(key.encode()).hexdigest() not in listed.stdout
    fields = line.split("\t")
    assert fields[2] == key[:12] + "…"
    assert fields[3:6] == ["5", "default", "3"]
    assert fields[7] == "-"

    duplicate = run_keys_command("create", name)
    assert duplicate.returncode == 1
    assert "exists already" in duplicate.stderr
    assert run_keys_command("create", name, "--rate-per-second", "0").returncode == 2

    get_key_directory().expire()
    async with http(app_on, Key(0, name, key)) as client:
        assert (await client.get("/jobs")).status_code == 200
        key_id = fields[0]
        revoked = run_keys_command("revoke", key_id)  # by id
        assert revoked.returncode == 0, revoked.stderr
        assert revoked.stdout.split("\t")[7].strip() != "-"

        async def refused() -> bool:
            return (await client.get("/jobs")).status_code == 401

        await until(refused)
    assert run_keys_command("revoke", f"missing-{uuid.uuid4()}").returncode == 1


def migrate(initial_key: str) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=REPO_ROOT,
        env=os.environ | {"INITIAL_API_KEY": initial_key},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert initial_key not in completed.stdout + completed.stderr


def initial_row() -> tuple[object, ...] | None:
    with get_sync_engine().connect() as connection:
        row = connection.execute(
            text("SELECT id, key_hash, created_at, revoked_at FROM api_keys WHERE name = 'initial'")
        ).one_or_none()
    return None if row is None else tuple(row)


@pytest.fixture
def no_initial_key() -> Iterator[None]:
    with get_sync_engine().begin() as connection:
        connection.execute(text("DELETE FROM api_keys WHERE name = 'initial'"))
    yield
    with get_sync_engine().begin() as connection:
        connection.execute(text("DELETE FROM api_keys WHERE name = 'initial'"))


@pytest.mark.usefixtures("no_initial_key")
async def test_the_migration_stores_the_initial_key_once(app_on: FastAPI) -> None:
    initial = api_keys.new_key()
    migrate(initial)
    first = initial_row()
    assert first is not None
    assert first[1] == hashlib.sha256(initial.encode()).digest()
    assert initial not in stored_rows()
    migrate(initial)
    assert initial_row() == first  # the same value again: nothing changed
    get_key_directory().expire()
    async with http(app_on, Key(0, "initial", initial)) as client:
        assert (await client.get("/jobs")).status_code == 200
    # A revocation stands while the value stays...
    assert keys_command.main(["revoke", "initial"]) == 0
    migrate(initial)
    revoked = initial_row()
    assert revoked is not None
    assert revoked[3] is not None
    # ...a new value replaces the key, usable, and the old one no longer is.
    replacement = api_keys.new_key()
    migrate(replacement)
    replaced = initial_row()
    assert replaced is not None
    assert replaced[0] == first[0]
    assert replaced[3] is None
    assert replaced[1] == hashlib.sha256(replacement.encode()).digest()
    get_key_directory().expire()
    async with http(app_on, Key(0, "initial", replacement)) as client:
        assert (await client.get("/jobs")).status_code == 200
    async with http(app_on, Key(0, "initial", initial)) as client:
        assert (await client.get("/jobs")).status_code == 401


def test_a_short_initial_key_is_refused_at_start() -> None:
    completed = subprocess.run(
        [sys.executable, "-c", "from app.config import load_settings; load_settings()"],
        cwd=REPO_ROOT,
        env=os.environ | {"INITIAL_API_KEY": "short"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode != 0
    assert "Invalid setting INITIAL_API_KEY" in completed.stderr
    assert "short" not in completed.stderr.replace("Invalid setting INITIAL_API_KEY", "")


def test_no_key_nor_its_hash_reaches_a_log_line(tmp_path: Path) -> None:
    """The API as a process, with keys in the header, in a path and in a query (which uvicorn's
    access log writes): its log holds none of them, nor their SHA-256."""
    key, wrong = make_key(), api_keys.new_key()
    initial = api_keys.new_key()  # a secret setting the API holds too, if it is given one
    port = free_port()
    log = tmp_path / "api.log"
    with log.open("wb") as output:
        api = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port)],
            cwd=REPO_ROOT,
            env=os.environ | {"AUTH_REQUIRED": "true", "INITIAL_API_KEY": initial},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_health(base, api, log, SETTLE_SECONDS)
        with httpx.Client(base_url=base) as client:
            assert client.get("/jobs", headers=key.header).status_code == 200
            assert (
                client.get("/jobs", headers={"Authorization": f"Bearer {wrong}"}).status_code == 401
            )
            for secret in (key.key, wrong, initial):
                assert client.get(f"/task/{secret}", headers=key.header).status_code == 422
                assert client.get("/jobs", params={"cursor": secret}).status_code == 401
    finally:
        stop_process(api)
    written = log.read_text()
    # The access log did write those requests (so the check below could find a key)...
    assert "GET /task/*** HTTP/1.1" in written, written
    assert "GET /jobs?cursor=*** HTTP/1.1" in written, written
    # ...and no key, no hash of one.
    for secret in (key.key, wrong, initial):
        digest = hashlib.sha256(secret.encode())
        for form in (secret, secret[4:], digest.hexdigest(), repr(digest.digest())):
            assert form not in written, form
