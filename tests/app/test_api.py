"""The HTTP API against the real database, broker and worker."""

import uuid

import httpx
import pytest

from tests.app.environment import WORKER_LOG
from tests.app.helpers import wait_for_log_line, wait_for_task

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("worker")]


async def test_tutorial_flow_post_then_poll_until_success(client: httpx.AsyncClient) -> None:
    accepted = await client.post("/process/7")
    assert accepted.status_code == 202
    body = accepted.json()
    assert body["status"] == "queued"
    task_id = body["task_id"]
    assert str(uuid.UUID(task_id)) == task_id

    done = await wait_for_task(client, task_id, {"SUCCESS", "FAILURE"})
    assert done == {
        "task_id": task_id,
        "status": "SUCCESS",
        "result": {"item_id": 7, "status": "processed"},
        "progress": 100,
        "error": None,
    }


async def test_unknown_task_id_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/task/{uuid.uuid4()}")
    assert response.status_code == 404


@pytest.mark.parametrize("task_id", ["abc", "123", "not-a-uuid-at-all-0000000000000000000"])
async def test_malformed_task_id_is_422(client: httpx.AsyncClient, task_id: str) -> None:
    response = await client.get(f"/task/{task_id}")
    assert response.status_code == 422


@pytest.mark.parametrize("item_id", ["-1", "abc", "1.5", str(2**31), "9" * 40])
async def test_bad_item_id_is_422(client: httpx.AsyncClient, item_id: str) -> None:
    response = await client.post(f"/process/{item_id}")
    assert response.status_code == 422


async def test_jobs_filter_by_status_and_page_by_cursor(client: httpx.AsyncClient) -> None:
    task_ids = [(await client.post(f"/process/{item}")).json()["task_id"] for item in (1, 2, 3)]
    for task_id in task_ids:
        await wait_for_task(client, task_id, {"SUCCESS"})

    first = (await client.get("/jobs", params={"status": "succeeded", "limit": 2})).json()
    assert len(first["items"]) == 2
    assert first["limit"] == 2
    assert {job["status"] for job in first["items"]} == {"succeeded"}
    second = (
        await client.get(
            "/jobs", params={"status": "succeeded", "limit": 2, "cursor": first["next_cursor"]}
        )
    ).json()
    assert second["items"]
    assert {job["status"] for job in second["items"]} == {"succeeded"}
    assert not {job["id"] for job in first["items"]} & {job["id"] for job in second["items"]}
    # The second page starts where the first ended, newest first.
    assert second["items"][0]["created_at"] <= first["items"][-1]["created_at"]
    # Newest first: the three just created lead the list.
    newest = (await client.get("/jobs", params={"limit": 3})).json()["items"]
    assert {job["id"] for job in newest} == set(task_ids)

    assert (await client.get("/jobs", params={"status": "bogus"})).status_code == 422
    assert (await client.get("/jobs", params={"limit": 0})).status_code == 422


async def test_notification_is_delivered_by_the_worker(client: httpx.AsyncClient) -> None:
    message = f"hello {uuid.uuid4()}"
    response = await client.post("/notifications", json={"user_id": 42, "message": message})
    assert response.status_code == 202
    task_id = response.json()["task_id"]

    # The (simulated) delivery is a log line written by the worker process.
    await wait_for_log_line(WORKER_LOG, f"notification for user 42: {message}")
    await wait_for_log_line(WORKER_LOG, f"send_notification[{task_id}] succeeded")


@pytest.mark.parametrize(
    "body", [{"user_id": 1}, {"user_id": -1, "message": "x"}, {"user_id": 1, "message": ""}]
)
async def test_bad_notification_is_422(client: httpx.AsyncClient, body: dict[str, object]) -> None:
    assert (await client.post("/notifications", json=body)).status_code == 422


async def test_liveness(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_openapi_docs_are_served(client: httpx.AsyncClient) -> None:
    assert (await client.get("/docs")).status_code == 200
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert {"/process/{item_id}", "/task/{task_id}", "/jobs", "/notifications"} <= set(paths)
