"""Bad input: generated requests from the app's own OpenAPI schema, oversized bodies, garbage ids
and wrong content types. Each is answered 4xx with a message saying what is wrong, never 5xx."""

import json
import math
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import anyio
import httpx
import pytest
import schemathesis
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import Case

from app.api import strict_json
from app.api.deps import get_broker_client
from app.api.routes.job_list import encode_cursor
from app.config import MAX_REQUEST_BODY_BYTES
from app.main import app
from app.storage.db import get_async_engine
from tests.app.environment import WORKER_LOG
from tests.app.helpers import wait_for_log_line

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
    if case.query is not None and "cursor" in case.query:
        # A generated cursor is none the API issued (a 422 by design, see
        # test_garbage_job_list_queries_are_422): one shaped like those it issues instead.
        case.query["cursor"] = encode_cursor(datetime.now(UTC), uuid.uuid4())
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
        {"cursor": "not-a-cursor"},
        {"cursor": "bm90LWEtZGF0ZSx4"},  # base64 of "not-a-date,x"
        {"cursor": "x" * 201},
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


# Non-finite numbers: Python's json module reads them (NaN, Infinity, -Infinity are not JSON; 1e400
# overflows a float to infinity), and the 422 that echoed such an input could not be encoded: a 500.
NON_FINITE = ("1e400", "-1e400", "NaN", "Infinity", "-Infinity", "1.5e999")


async def _post_json_text(http: httpx.AsyncClient, body: str) -> httpx.Response:
    return await http.post(
        "/notifications", content=body.encode(), headers={"content-type": "application/json"}
    )


@pytest.mark.anyio
@pytest.mark.parametrize("number", NON_FINITE)
async def test_non_finite_user_id_is_422_naming_it(http: httpx.AsyncClient, number: str) -> None:
    response = await _post_json_text(http, f'{{"user_id": {number}, "message": "hi"}}')
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"][0] == "body"
    assert f"non-finite number {number} is not allowed" in error["ctx"]["error"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    "template",
    [
        '{{"user_id": 1, "message": {n}}}',
        '{{"user_id": 1, "message": "hi", "extra": {n}}}',
        '{{"user_id": 1, "message": "hi", "nested": [1, {{"deep": [{n}]}}]}}',
        "[{n}]",
        "{n}",
    ],
)
@pytest.mark.parametrize("number", NON_FINITE)
async def test_non_finite_number_anywhere_in_a_body_is_422(
    http: httpx.AsyncClient, template: str, number: str
) -> None:
    response = await _post_json_text(http, template.format(n=number))
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["type"] == "json_invalid"


@pytest.mark.anyio
async def test_large_finite_numbers_still_reach_validation(http: httpx.AsyncClient) -> None:
    # 1e300 is finite: not a parse error, but a user_id out of range, named by field.
    response = await _post_json_text(http, '{"user_id": 1e300, "message": "hi"}')
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "user_id"]


def _json_values(leaf: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaf,
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(st.text(max_size=5), children, max_size=3)
        ),
        max_leaves=6,
    )


_NON_FINITE_FLOATS = st.sampled_from([math.inf, -math.inf, math.nan])
_FINITE = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
)


@given(
    extra=_json_values(_FINITE),
    bad=_NON_FINITE_FLOATS,
    where=st.sampled_from(["user_id", "message", "extra"]),
)
@settings(max_examples=60, deadline=None, database=None)
def test_generated_bodies_with_a_non_finite_number_are_422(
    extra: Any, bad: float, where: str
) -> None:
    """Schemathesis cannot generate NaN or infinities (its strategies set allow_nan=False and
    allow_infinity=False), so Hypothesis builds the bodies: a valid notification with a non-finite
    number as a field or inside arbitrary extra JSON, written the way Python's json module writes
    it (NaN, Infinity)."""
    body: dict[str, Any] = {"user_id": 1, "message": "hi", "extra": extra}
    if where == "extra":
        body["extra"] = [extra, {"deep": bad}]
    else:
        body[where] = bad
    text = json.dumps(body)
    response = anyio.run(_post_in_process, text)
    assert response.status_code == 422, (text, response.text)


async def _post_in_process(text: str) -> httpx.Response:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        return await _post_json_text(client, text)


@pytest.mark.anyio
async def test_a_validation_error_holding_a_non_finite_input_is_still_a_422() -> None:
    """The 422 handler itself: whatever reaches validation, the answer can be encoded."""
    error = RequestValidationError(
        [{"type": "int_from_float", "loc": ("body", "user_id"), "msg": "bad", "input": math.inf}]
    )
    response = await strict_json.validation_error(Request({"type": "http"}), error)
    assert response.status_code == 422
    assert json.loads(bytes(response.body))["detail"][0]["input"] == "inf"


@pytest.mark.anyio
@pytest.mark.usefixtures("worker")
async def test_a_notification_cannot_forge_a_worker_log_line(http: httpx.AsyncClient) -> None:
    marker = uuid.uuid4().hex
    forged = f"[2026-01-01 00:00:00,000: ERROR/MainProcess] forged {marker}"
    message = f"hello\n{forged}\r\n{forged}\x1b[0m\u2028{forged}"
    response = await http.post("/notifications", json={"user_id": 7, "message": message})
    assert response.status_code == 202
    task_id = response.json()["task_id"]
    await wait_for_log_line(WORKER_LOG, f"send_notification[{task_id}] succeeded")
    log = WORKER_LOG.read_text()
    # The whole message on the delivery's own line, its control characters escaped...
    escaped = f"hello\\n{forged}\\r\\n{forged}\\x1b[0m\\u2028{forged}"
    assert f"notification for user 7: {escaped}" in log
    # ...and no line (split as a log reader splits them) that starts with the forged prefix.
    lines = log.replace("\r", "\n").replace("\u2028", "\n").splitlines()
    assert not [line for line in lines if line.startswith("[2026-01-01") and marker in line]


@pytest.mark.anyio
@pytest.mark.parametrize("message", ["\x00", "before\x00after"])
async def test_a_nul_character_in_a_notification_is_422(
    http: httpx.AsyncClient, message: str
) -> None:
    # PostgreSQL text and jsonb cannot hold NUL: refused by validation, not a 500 from the INSERT.
    response = await http.post("/notifications", json={"user_id": 7, "message": message})
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "message"]
    assert "NUL" in error["msg"]
