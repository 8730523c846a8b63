"""Bad input: generated requests from the app's own OpenAPI schema, oversized bodies, garbage ids
and wrong content types. Each is answered 4xx with a message saying what is wrong, never 5xx."""

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case

from app.api.deps import get_broker_client
from app.db import get_async_engine
from app.main import MAX_REQUEST_BODY_BYTES, app

schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.fixture(scope="module", autouse=True)
def _release_schemathesis_loop_resources() -> Iterator[None]:
    """Schemathesis drives the app on its own event-loop thread; drop what was opened there.

    The next test's loop must not inherit pooled connections bound to that loop: the engine's pool
    is replaced (connections left to that loop) and the broker client rebuilt on first use.
    """
    yield
    get_async_engine().sync_engine.dispose(close=False)
    get_broker_client.cache_clear()


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_schema_conformance_and_no_server_error(case: Case[Any]) -> None:
    """Every documented operation: no 5xx, status codes, headers and bodies as the schema says."""
    key = case.headers.get("Idempotency-Key") if case.headers is not None else None
    if key is not None and case.headers is not None:
        # Generated keys repeat ("0") across different requests, which is a 422 by design
        # (test_idempotency.py): a key of its own per generated request.
        case.headers["Idempotency-Key"] = f"{key[:200]}-{uuid.uuid4().hex}"
    case.call_and_validate()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """The in-process app, as in tests/app/conftest.py, without needing the worker."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        yield client
    if get_broker_client.cache_info().currsize:
        await get_broker_client().aclose()
        get_broker_client.cache_clear()
    await get_async_engine().dispose()


@pytest.mark.anyio
async def test_multi_megabyte_notification_is_413(http: httpx.AsyncClient) -> None:
    body = b'{"user_id": 1, "message": "' + b"x" * (4 * 1024 * 1024) + b'"}'
    response = await http.post(
        "/notifications", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert "too large" in response.text.lower()


@pytest.mark.anyio
async def test_oversized_body_without_content_length_is_413(http: httpx.AsyncClient) -> None:
    """A chunked body (no Content-Length) is cut off once it passes the limit."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"user_id": 1, "message": "'
        for _ in range(64):
            yield b"y" * 65536
        yield b'"}'

    response = await http.post(
        "/notifications", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert "too large" in response.text.lower()


@pytest.mark.anyio
async def test_body_at_the_limit_is_read_and_validated(http: httpx.AsyncClient) -> None:
    """Just under the limit the body is parsed: an over-long message is a 422 naming the field."""
    prefix, suffix = b'{"user_id": 1, "message": "', b'"}'
    filler = b"z" * (MAX_REQUEST_BODY_BYTES - len(prefix) - len(suffix))
    response = await http.post(
        "/notifications",
        content=prefix + filler + suffix,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "message"]
    assert "at most 2000 characters" in error["msg"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/plain", b'{"user_id": 1, "message": "hi"}'),
        ("application/x-www-form-urlencoded", b"user_id=1&message=hi"),
        ("multipart/form-data; boundary=x", b"--x\r\n\r\nhi\r\n--x--\r\n"),
        ("application/xml", b"<notification><user_id>1</user_id></notification>"),
        (None, b'{"user_id": 1, "message": "hi"}'),
    ],
)
async def test_wrong_content_type_is_415(
    http: httpx.AsyncClient, content_type: str | None, body: bytes
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = await http.post("/notifications", content=body, headers=headers)
    assert response.status_code == 415
    assert response.json()["detail"].startswith("Content-Type must be application/json, got")


@pytest.mark.anyio
async def test_json_with_charset_and_vendor_suffix_is_accepted_as_json(
    http: httpx.AsyncClient,
) -> None:
    # Both are JSON: the guard must not refuse them (422 here only because user_id is negative,
    # which proves the body was parsed).
    for content_type in ("application/json; charset=utf-8", "application/vnd.taskstack+json"):
        response = await http.post(
            "/notifications",
            content=b'{"user_id": -1, "message": "hi"}',
            headers={"content-type": content_type},
        )
        assert response.status_code == 422, content_type
        assert response.json()["detail"][0]["loc"] == ["body", "user_id"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    "body",
    [
        b'{"user_id": 1,',
        b"[1, 2, 3]",
        b'"just a string"',
        b"null",
        b'{"user_id": "one", "message": 5}',
        b'{"user_id": 1, "message": ""}',
        b'{"user_id": 99999999999999999999999, "message": "hi"}',
    ],
)
async def test_garbage_json_body_is_422_naming_the_problem(
    http: httpx.AsyncClient, body: bytes
) -> None:
    response = await http.post(
        "/notifications", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    errors = response.json()["detail"]
    assert errors
    assert all(error["msg"] and error["loc"][0] == "body" for error in errors)


@pytest.mark.anyio
async def test_undecodable_json_body_is_400(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/notifications",
        content=b"\xff\xfe\x00\x01 not json",
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["detail"] == "There was an error parsing the body"


@pytest.mark.anyio
@pytest.mark.parametrize(
    "path",
    [
        "/task/%00",
        "/task/" + "f" * 5000,
        "/task/00000000-0000-0000-0000-00000000000g",
        "/task/'; DROP TABLE jobs; --",
        "/task/%F0%9F%92%A5",
        "/process/%00",
        "/process/1e3",
        "/process/0x10",
        "/process/" + "9" * 5000,
        "/process/NaN",
    ],
)
async def test_garbage_ids_are_4xx_with_a_message(http: httpx.AsyncClient, path: str) -> None:
    method = "POST" if path.startswith("/process/") else "GET"
    response = await http.request(method, path)
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["detail"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    "params",
    [
        {"status": "SUCCESS"},
        {"limit": "-1"},
        {"limit": "100000"},
        {"offset": "-5"},
        {"offset": "1e9"},
        {"limit": "ten"},
    ],
)
async def test_garbage_job_list_queries_are_422(
    http: httpx.AsyncClient, params: dict[str, str]
) -> None:
    response = await http.get("/jobs", params=params)
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["query", next(iter(params))]
