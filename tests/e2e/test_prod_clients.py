"""Only the clients you allow, on the rehearsed prod stack (docs/app.md "API keys", RELIABILITY.md
"One client's flood"): every endpoint refuses a missing, wrong or revoked key; a client sees only
its own jobs, through the proxy and the API's cache alike; keys are made and revoked by the
operator command in a running API container; one client's flood at 1,000 connections leaves
another's requests answered. Latencies are measured and reported, never asserted."""

from __future__ import annotations

import statistics
import subprocess
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from deploy.stack import DeployedStack, eventually
from infra.spec import app_role_password
from infra.spec.monitoring import internal_password
from rehearsal.stack_config import read_rehearsal_secrets
from tests.faults.measure import report

# Generous bounds on what must happen (polling), not performance figures.
SETTLE_SECONDS = 60
FLOOD_CONNECTIONS = 1000
FLOOD_SECONDS = 20
OTHER_CLIENT_PER_SECOND = 10


@dataclass(frozen=True)
class Client:
    name: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def keys_command(stack: DeployedStack, *args: str) -> str:
    """`python -m app.keys ...` in a running API container, as an operator runs it."""
    api = stack.container(stack.names("api")[0])
    result = api.exec_run(["python", "-m", "app.keys", *args], demux=True)
    out, err = result.output
    assert result.exit_code == 0, (err or b"").decode()
    return (out or b"").decode().strip()


def new_client(stack: DeployedStack, **limits: str) -> Client:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    options = [arg for option, value in limits.items() for arg in (f"--{option}", value)]
    client = Client(name, keys_command(stack, "create", name, *options))

    def usable() -> bool:
        """every API process has read the new key"""
        answers = {
            httpx.get(f"{stack.api_url}/jobs?limit=1", headers=client.headers, timeout=10)
            for _ in range(8)
        }
        return {answer.status_code for answer in answers} == {200}

    eventually(usable, within=SETTLE_SECONDS)
    return client


def finished_job(stack: DeployedStack, client: Client, item: int) -> str:
    with httpx.Client(base_url=stack.api_url, headers=client.headers, timeout=30) as http:
        answer = http.post(f"/process/{item}")
        assert answer.status_code == 202, answer.text
        task_id = str(answer.json()["task_id"])

        def done() -> bool:
            """the job finished"""
            return bool(http.get(f"/task/{task_id}").json().get("status") == "SUCCESS")

        eventually(done, within=SETTLE_SECONDS)
    return task_id


@pytest.fixture(scope="module")
def clients(prod_stack: DeployedStack) -> tuple[Client, Client]:
    # Limits out of the flood test's way for B; A keeps the defaults.
    return new_client(prod_stack), new_client(prod_stack)


def test_every_endpoint_refuses_a_missing_or_wrong_key(prod_stack: DeployedStack) -> None:
    task = uuid.uuid4()
    requests = [
        ("POST", "/process/1"),
        ("GET", f"/task/{task}"),
        ("GET", "/jobs"),
        ("POST", "/notifications"),
        ("GET", "/docs"),
        ("GET", "/openapi.json"),
    ]
    wrong = {"Authorization": "Bearer tsk_" + "x" * 43}
    for method, path in requests:
        for headers in ({}, wrong):
            answer = httpx.request(method, f"{prod_stack.api_url}{path}", headers=headers)
            assert answer.status_code == 401, (method, path, headers, answer.text)
            assert answer.headers["www-authenticate"].startswith("Bearer"), (method, path)
    for path in ("/health", "/health/ready"):
        assert httpx.get(f"{prod_stack.api_url}{path}").status_code == 200
    # The docs are off in prod, even with a key.
    assert httpx.get(f"{prod_stack.api_url}/docs", headers=prod_stack.headers).status_code == 404


def test_each_client_sees_only_its_own_jobs(
    prod_stack: DeployedStack, clients: tuple[Client, Client]
) -> None:
    a, b = clients
    task_id = finished_job(prod_stack, a, 1)
    url = f"{prod_stack.api_url}/task/{task_id}"
    # Asked many times: neither the proxy's cache (which answers A's polls: an `age` header)
    # nor an API process's answers B with A's job.
    from_the_door = 0
    for _ in range(20):
        own = httpx.get(url, headers=a.headers)
        assert own.json()["status"] == "SUCCESS"
        from_the_door += "age" in own.headers
        other = httpx.get(url, headers=b.headers)
        assert other.status_code == 404, other.text
        assert "age" not in other.headers, other.headers
    assert from_the_door > 0
    listed = httpx.get(f"{prod_stack.api_url}/jobs?limit=500", headers=b.headers).json()
    assert task_id not in {job["id"] for job in listed["items"]}
    mine = httpx.get(f"{prod_stack.api_url}/jobs?limit=500", headers=a.headers).json()
    assert task_id in {job["id"] for job in mine["items"]}


def test_a_revoked_key_is_refused_within_seconds(prod_stack: DeployedStack) -> None:
    client = new_client(prod_stack)
    # A finished job the door keeps for this key: revoked, the key gets it no more.
    task_url = f"{prod_stack.api_url}/task/{finished_job(prod_stack, client, 5)}"
    listed = keys_command(prod_stack, "list")
    assert client.name in listed
    assert client.key not in listed  # only its first characters
    keys_command(prod_stack, "revoke", client.name)

    def refused() -> bool:
        """every API process, and the door's cache, refuses the revoked key"""
        answers = [
            httpx.post(f"{prod_stack.api_url}/process/5", headers=client.headers).status_code
            for _ in range(8)
        ]
        answers += [httpx.get(task_url, headers=client.headers).status_code for _ in range(8)]
        return set(answers) == {401}

    eventually(refused, within=SETTLE_SECONDS)


def test_no_key_reaches_a_log_or_docker_inspect(
    prod_stack: DeployedStack, clients: tuple[Client, Client]
) -> None:
    keys = [client.key for client in clients]
    initial = prod_stack.headers["Authorization"].removeprefix("Bearer ")
    passwords = _stack_passwords(prod_stack.name)
    # Credentials are files in each copy's secrets volume (infra/targets/docker_secrets.py):
    # none in any container's configuration, the never-started secrets containers included.
    assert prod_stack.all_containers()
    for container in prod_stack.all_containers():
        logs = container.logs().decode(errors="replace")
        inspected = str(container.attrs)
        for key in keys:
            assert key not in logs, container.name
            assert key not in inspected, container.name
        assert initial not in logs, container.name
        assert initial not in inspected, container.name
        for name, password in passwords.items():
            assert password not in inspected, (container.name, name)


def _stack_passwords(stack: str) -> dict[str, str]:
    """The stack's credentials (what the rehearsal generated for it) and the ones derived from
    them, by a name for the messages."""
    credentials = read_rehearsal_secrets(stack)
    admin = credentials["taskstack:postgresPassword"]
    console = credentials["taskstack:flowerBasicAuth"]
    passwords = {
        "postgresPassword": admin,
        "app role password": app_role_password(admin, "taskstack"),
        "redisPassword": credentials["taskstack:redisPassword"],
        "flowerBasicAuth": console.split(":", 1)[1],
        "console internal password": internal_password(console),
    }
    for key in ("taskstack:initialApiKey", "taskstack:alertWebhookUrl"):
        if key in credentials:
            passwords[key] = credentials[key]
    return passwords


def test_one_clients_flood_leaves_another_answered(
    prod_stack: DeployedStack, clients: tuple[Client, Client], tmp_path: Path
) -> None:
    flooder, other = clients
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    stop = threading.Event()

    def steady() -> None:
        with httpx.Client(base_url=prod_stack.api_url, headers=other.headers, timeout=10) as http:
            item, next_at = 700_000, time.monotonic()
            while not stop.is_set():
                started = time.monotonic()
                try:
                    statuses[http.post(f"/process/{item}").status_code] += 1
                except httpx.HTTPError:
                    statuses[0] += 1
                latencies.append(time.monotonic() - started)
                item += 1
                next_at += 1 / OTHER_CLIENT_PER_SECOND
                time.sleep(max(0.0, next_at - time.monotonic()))

    thread = threading.Thread(target=steady)
    thread.start()
    time.sleep(2)
    flood = run_flood(prod_stack.api_url, flooder, tmp_path)
    time.sleep(2)
    stop.set()
    thread.join()
    sent = sum(statuses.values())
    answered = sum(count for status, count in statuses.items() if 200 <= status < 300)
    ordered = sorted(latencies)
    flood_answers = {
        int(code): int(count)
        for line in flood.splitlines()
        if line.startswith("status ")
        for code, count in [line.split()[1:3]]
    }
    report(
        "one client floods at 1,000 connections, another sends 10 POSTs a second",
        other_requests=sent,
        other_2xx_share=round(answered / sent, 4),
        other_statuses=dict(statuses),
        other_p50_ms=round(statistics.median(ordered) * 1000, 1),
        other_p99_ms=round(ordered[int(0.99 * (len(ordered) - 1))] * 1000, 1),
        flood_requests_per_second=flood_rate(flood),
        flood_statuses=flood_answers,
    )
    assert answered / sent >= 0.99, statuses
    assert flood_answers, flood
    assert 429 in flood_answers, flood_answers
    assert not any(status >= 500 for status in flood_answers), flood_answers


# wrk's own Lua: POST /process as fast as 1,000 connections go, each answer's status counted per
# thread and printed at the end.
FLOOD_SCRIPT = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {} end
request = function()
  return wrk.format("POST", "/process/" .. math.random(1, 1000000))
end
function response(status, headers, body) statuses[status] = (statuses[status] or 0) + 1 end
function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    for code, count in pairs(thread:get("statuses")) do
      total[code] = (total[code] or 0) + count
    end
  end
  for code, count in pairs(total) do io.write(string.format("status %d %d\\n", code, count)) end
end
"""


def run_flood(api_url: str, flooder: Client, directory: Path) -> str:
    script = directory / "flood.lua"
    script.write_text(FLOOD_SCRIPT)
    command = (
        f"ulimit -n 8192; exec wrk -t2 -c{FLOOD_CONNECTIONS} -d{FLOOD_SECONDS}s "
        f"-H 'Authorization: Bearer {flooder.key}' -s {script} {api_url}"
    )
    flood = subprocess.run(
        ["bash", "-c", command],
        capture_output=True,
        text=True,
        timeout=FLOOD_SECONDS + 60,
        check=False,
    )
    return flood.stdout + flood.stderr


def flood_rate(wrk_output: str) -> float:
    for line in wrk_output.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    return 0.0
