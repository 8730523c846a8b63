"""The prod stack, rehearsed on the Docker engine: hardened, authenticated, closed to this machine,
idempotent, and its data outlives a down and up."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import uuid
from pathlib import Path

import docker
import httpx
import pytest

from deploy.probe import deploy_new_image_under_probe, trickle_request, write_report
from deploy.stack import ARTIFACTS, DeployedStack, eventually
from infra.config import StackConfig
from infra.spec import APP_ROLES
from tests.e2e.checks import assert_deploy_kept_its_promises

GATED = tuple(role for role in APP_ROLES if role != "migrate")  # behind the migration gate


def _app_containers(stack: DeployedStack) -> list[str]:
    return [name for role in APP_ROLES for name in stack.names(role)]


def test_every_app_container_is_hardened(prod_stack: DeployedStack) -> None:
    for name in _app_containers(prod_stack):
        attrs = prod_stack.container(name).attrs
        assert attrs["Config"]["User"] == "10001:10001", name
        assert attrs["HostConfig"]["ReadonlyRootfs"] is True, name
        assert attrs["HostConfig"]["CapDrop"] == ["ALL"], name
        assert not attrs["HostConfig"]["CapAdd"], name
        assert "no-new-privileges:true" in attrs["HostConfig"]["SecurityOpt"], name
        assert attrs["HostConfig"]["Privileged"] is False, name


def test_the_proxy_is_hardened_too(prod_stack: DeployedStack) -> None:
    (name,) = prod_stack.names("proxy")
    attrs = prod_stack.container(name).attrs
    assert attrs["Config"]["User"] == "99:99"
    assert attrs["HostConfig"]["ReadonlyRootfs"] is True
    assert attrs["HostConfig"]["CapDrop"] == ["ALL"]
    assert "no-new-privileges:true" in attrs["HostConfig"]["SecurityOpt"]


@pytest.mark.parametrize("role", GATED)
def test_running_processes_are_unprivileged_and_cannot_write_the_image(
    prod_stack: DeployedStack, role: str
) -> None:
    container = prod_stack.container(prod_stack.names(role)[0])
    exit_code, identity = container.exec_run(["id", "-u"])
    assert (exit_code, identity.decode().strip()) == (0, "10001")
    exit_code, status = container.exec_run(["grep", "-E", "^(NoNewPrivs|CapEff)", "/proc/1/status"])
    assert exit_code == 0
    assert "NoNewPrivs:\t1" in status.decode()
    assert "CapEff:\t0000000000000000" in status.decode()
    exit_code, output = container.exec_run(["touch", "/app/written"])
    assert exit_code != 0
    assert "Read-only file system" in output.decode()


def test_tutorial_flow_on_the_hardened_stack(prod_stack: DeployedStack) -> None:
    body = prod_stack.submit_and_wait(42)
    assert body["result"] == {"item_id": 42, "status": "processed"}


def test_a_key_holders_finished_poll_is_answered_by_the_proxy_as_the_api_said(
    prod_stack: DeployedStack,
) -> None:
    # submit_and_wait polls while the job is PENDING: had anything kept one of those answers, it
    # would never have seen SUCCESS (unfinished answers are no-store, app/api/finished_jobs.py).
    # A key holder's finished answer is kept by the proxy for that key alone, for seconds
    # (docs/infra.md, "The front door"); the client sees the API's own `private` Cache-Control.
    done = prod_stack.submit_and_wait(43)
    unknown = uuid.uuid4()
    with prod_stack.api() as client:
        again = [client.get(f"/task/{done['task_id']}") for _ in range(3)]
        missing = [client.get(f"/task/{unknown}") for _ in range(2)]
    for response in again:
        assert response.json() == done
        assert response.headers["cache-control"].startswith("private, max-age="), response.headers
        assert "x-client-cache-control" not in response.headers, response.headers
    assert any("age" in response.headers for response in again), [r.headers for r in again]
    for response in missing:
        assert response.status_code == 404
        assert "age" not in response.headers, response.headers


def _redis_ping_from_api(stack: DeployedStack, url_expression: str) -> tuple[int, str]:
    api = stack.names("api")[0]
    script = f"import os, redis; print(redis.Redis.from_url({url_expression}).ping())"
    exit_code, output = stack.container(api).exec_run(["python", "-c", script])
    return exit_code, output.decode()


def test_redis_refuses_a_client_without_the_password(prod_stack: DeployedStack) -> None:
    # From inside the data network (where Redis is reachable at all): with the app's URL it answers.
    own_url = "open('/run/secrets/redis_url').read().strip()"
    assert _redis_ping_from_api(prod_stack, own_url) == (0, "True\n")
    exit_code, output = _redis_ping_from_api(prod_stack, "'redis://redis:6379/0'")
    assert exit_code != 0
    assert "redis.exceptions.AuthenticationError" in output, output


def test_flower_requires_its_credentials(prod_stack: DeployedStack) -> None:
    anonymous = httpx.get(prod_stack.flower_url, timeout=30)
    assert anonymous.status_code == 401
    wrong = httpx.get(prod_stack.flower_url, auth=("rehearsal", "not-the-password"), timeout=30)
    assert wrong.status_code == 401
    allowed = httpx.get(
        f"{prod_stack.flower_url}/api/workers", auth=prod_stack.flower_auth(), timeout=30
    )
    assert allowed.status_code == 200


def _refused(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(3)
        return probe.connect_ex(("127.0.0.1", port)) != 0


def test_postgres_and_redis_are_not_reachable_from_loopback(prod_stack: DeployedStack) -> None:
    for role in ("postgres", "redis"):
        (name,) = prod_stack.names(role)
        attrs = prod_stack.container(name).attrs
        assert not attrs["HostConfig"]["PortBindings"], name
        assert not any(attrs["NetworkSettings"]["Ports"].values()), name
        # Only the internal data network: no route out, none in from the host's bridge.
        networks = list(attrs["NetworkSettings"]["Networks"])
        assert networks == [f"taskstack-{prod_stack.name}-data"], networks
    data_network = docker.from_env().networks.get(f"taskstack-{prod_stack.name}-data")
    assert data_network.attrs["Internal"] is True
    # Where the dev stack would publish them (Pulumi.yaml defaults): nothing listens.
    assert _refused(15432)
    assert _refused(16379)
    # The published API port, for contrast, does answer.
    assert not _refused(int(prod_stack.api_url.rsplit(":", 1)[1]))


def test_a_second_up_changes_nothing(prod_stack: DeployedStack) -> None:
    before = {c.name: c.id for c in prod_stack.all_containers()}
    image_before = prod_stack.outputs["imageId"]
    second = prod_stack.up()
    after = {c.name: c.id for c in prod_stack.all_containers()}
    # The image is rebuilt on every up; BuildKit gives the same id unless the context changed (a
    # file under app/ or alembic/, pyproject.toml, uv.lock edited while the test ran).
    assert prod_stack.outputs["imageId"] == image_before, "the build context changed between ups"
    # Diffed against what the provider's Read wrote back (rehearsal/readback.py), as the engine
    # diffs: no update, no replacement.
    assert second.changes == []
    assert after == before


def test_data_survives_down_and_up(prod_stack: DeployedStack) -> None:
    body = prod_stack.submit_and_wait(7)
    task_id = body["task_id"]
    before = {c.name: c.id for c in prod_stack.all_containers()}
    roles_before = sorted(c.labels["com.taskstack.role"] for c in prod_stack.all_containers())

    prod_stack.down()
    assert prod_stack.all_containers() == []
    prod_stack.up()

    after = {c.name: c.id for c in prod_stack.all_containers()}
    roles_after = sorted(c.labels["com.taskstack.role"] for c in prod_stack.all_containers())
    assert roles_after == roles_before
    assert not set(after.values()) & set(before.values())  # new containers, same volumes
    with prod_stack.api() as client:
        again = client.get(f"/task/{task_id}")
    assert again.status_code == 200
    assert again.json()["status"] == "SUCCESS"
    assert again.json()["result"] == {"item_id": 7, "status": "processed"}


# --- Least privilege, on the engine -----------------------------------------------------------


def _env(stack: DeployedStack, name: str) -> dict[str, str]:
    entries = stack.container(name).attrs["Config"]["Env"]
    return dict(str(entry).split("=", 1) for entry in entries)


def _admin_psql(stack: DeployedStack, sql: str) -> str:
    (postgres,) = stack.names("postgres")
    exit_code, output = stack.container(postgres).exec_run(
        ["psql", "-U", "postgres", "-d", "taskstack", "-v", "ON_ERROR_STOP=1", "-Atc", sql]
    )
    assert exit_code == 0, output.decode()
    return str(output.decode()).strip()


def test_the_app_role_is_not_a_superuser_and_owns_only_its_schema(
    prod_stack: DeployedStack,
) -> None:
    flags = _admin_psql(
        prod_stack,
        "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls"
        " FROM pg_roles WHERE rolname = 'taskstack'",
    )
    assert flags == "f|f|f|f|f"
    owned = _admin_psql(
        prod_stack,
        "SELECT 'schema ' || nspname FROM pg_namespace WHERE nspowner = 'taskstack'::regrole"
        " UNION ALL SELECT 'table ' || schemaname || '.' || tablename FROM pg_tables"
        " WHERE tableowner = 'taskstack'"
        " UNION ALL SELECT 'database ' || datname FROM pg_database"
        " WHERE datdba = 'taskstack'::regrole ORDER BY 1",
    )
    assert owned.splitlines() == [
        "schema taskstack",
        "table taskstack.alembic_version",
        "table taskstack.api_keys",
        "table taskstack.backup_status",
        "table taskstack.idempotency_keys",
        "table taskstack.jobs",
        "table taskstack.outbox",
    ]
    # And the app connects as it (over TCP, with its password: scram-sha-256).
    api = prod_stack.names("api")[0]
    url = prod_stack.secret_files(api)["database_url"]
    assert url.startswith("postgresql+psycopg://taskstack:")
    assert "taskstack" in _admin_psql(
        prod_stack,
        "SELECT string_agg(DISTINCT usename, ',') FROM pg_stat_activity"
        " WHERE client_addr IS NOT NULL",
    ).split(",")


def test_each_container_holds_only_the_credentials_it_uses(prod_stack: DeployedStack) -> None:
    (migrate,) = prod_stack.names("migrate")
    (flower,) = prod_stack.names("flower")
    (postgres,) = prod_stack.names("postgres")
    broker = {"redis_url", "celery_broker_url", "celery_result_backend"}
    admin_password = prod_stack.secret_files(postgres)["postgres_password"]
    assert not {"database_url", "admin_database_url"} & set(prod_stack.secret_files(flower))
    assert not broker & set(prod_stack.secret_files(migrate))
    assert "admin_database_url" in prod_stack.secret_files(migrate)
    # The administrator's password: PostgreSQL (initdb) and the migration, nobody else; and no
    # credential in any container's environment (`docker inspect` shows it).
    holders = set()
    for container in prod_stack.role_containers():
        held = [
            *prod_stack.secret_files(container.name).values(),
            *_env(prod_stack, container.name).values(),
        ]
        if any(admin_password in value for value in held):
            holders.add(container.name)
        assert not any(
            admin_password in value for value in _env(prod_stack, container.name).values()
        )
    assert holders == {postgres, migrate}


def test_flower_metrics_need_the_credentials(prod_stack: DeployedStack) -> None:
    assert httpx.get(f"{prod_stack.flower_url}/metrics", timeout=30).status_code == 401
    allowed = httpx.get(
        f"{prod_stack.flower_url}/metrics", auth=prod_stack.flower_auth(), timeout=30
    )
    assert allowed.status_code == 200


# --- Overload limits, on the engine ----------------------------------------------------------


def test_every_container_has_a_process_limit(prod_stack: DeployedStack) -> None:
    for container in prod_stack.role_containers():
        ulimits = container.attrs["HostConfig"]["Ulimits"]
        assert [u["Name"] for u in ulimits] == ["nproc"], container.name
        (limit,) = ulimits
        assert 0 < limit["Soft"] == limit["Hard"] <= 1024, container.name


def test_redis_refuses_writes_before_its_container_limit(prod_stack: DeployedStack) -> None:
    (redis,) = prod_stack.names("redis")
    container = prod_stack.container(redis)
    code, out = container.exec_run(
        [
            "sh",
            "-c",
            'export REDISCLI_AUTH="$(cat /run/secrets/redis_password)"; '
            "redis-cli config get maxmemory; redis-cli config get maxmemory-policy",
        ]
    )
    assert code == 0, out
    values = out.decode().split()
    maxmemory = int(values[1])
    assert values[3] == "noeviction"
    assert 0 < maxmemory < container.attrs["HostConfig"]["Memory"]


# -- the front door ------------------------------------------------------------------------------


def _api_port(stack: DeployedStack) -> int:
    return int(stack.api_url.rsplit(":", 1)[1])


def test_the_api_is_reachable_only_through_the_proxy(prod_stack: DeployedStack) -> None:
    port = str(_api_port(prod_stack))
    publishers = []
    for container in prod_stack.all_containers():
        bindings = container.attrs["HostConfig"]["PortBindings"] or {}
        published = {b["HostPort"] for bs in bindings.values() for b in bs or []}
        if port in published:
            publishers.append(container.labels["com.taskstack.role"])
    assert publishers == ["proxy"]
    apis = prod_stack.names("api")
    assert len(apis) == 2
    for name in apis:
        attrs = prod_stack.container(name).attrs
        assert not attrs["HostConfig"]["PortBindings"], name
        assert not any(attrs["NetworkSettings"]["Ports"].values()), name
    # Through the proxy, both copies answer (round robin): each copy's hostname is its id.
    with prod_stack.api() as client:
        for _ in range(20):
            assert client.get("/health").status_code == 200


def test_a_slow_client_is_cut_off_within_the_request_timeout(prod_stack: DeployedStack) -> None:
    timeout = StackConfig().proxy_request_timeout_seconds
    slow = trickle_request(prod_stack.api_url, wait_bound=timeout * 5)
    write_report(
        ARTIFACTS / "slow-client-rehearsal-prod.json",
        {
            "request_timeout_seconds": timeout,
            "bytes_sent_before_cut_off": slow.sent,
            "bytes_of_the_whole_request": slow.total,
            "seconds_until_cut_off": slow.seconds,
            "answer": slow.answer.decode(errors="replace").splitlines()[:1],
        },
    )
    # One byte a second: cut off long before the whole request was sent, with 408.
    assert slow.answer.startswith(b"HTTP/1.1 408"), slow
    assert slow.sent < slow.total, slow


def test_a_body_above_the_limit_is_refused_at_the_proxy(prod_stack: DeployedStack) -> None:
    limit = StackConfig().proxy_max_body_kb * 1024
    with prod_stack.api() as client:
        too_big = client.post(
            "/notifications",
            content=b"x" * (limit + 1),
            headers={"content-type": "application/json"},
        )
        fits = client.post("/notifications", json={"user_id": 1, "message": "hello"})
    assert too_big.status_code == 413
    assert "<h1>413" in too_big.text  # HAProxy's own page: the API never saw the body
    assert fits.status_code == 202


def test_the_proxy_logs_what_it_refused_and_not_the_normal_requests(
    prod_stack: DeployedStack,
) -> None:
    # prod's default proxyAccessLog is "errors" (docs/infra.md): a line per request costs GET ~40 %.
    normal, refused = f"/task/{uuid.uuid4()}", f"/notifications?{uuid.uuid4().hex}"
    limit = StackConfig().proxy_max_body_kb * 1024
    with prod_stack.api() as client:
        assert client.get(normal).status_code == 404
        too_big = client.post(
            refused, content=b"x" * (limit + 1), headers={"content-type": "application/json"}
        )
        assert too_big.status_code == 413
    (proxy,) = prod_stack.names("proxy")

    def log_with_the_refusal() -> str | None:
        text = prod_stack.logs(proxy)
        return text if refused in text else None

    logged = eventually(log_with_the_refusal, within=10)
    assert f"POST {refused} HTTP/1.1" in logged
    assert normal not in logged


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (openssl, as an operator would make a test one)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_tls_when_the_stack_sets_a_certificate_and_key(
    prod_stack: DeployedStack, tmp_path: Path
) -> None:
    cert, key = _self_signed(tmp_path)
    tls = {"tlsCertificate": cert.read_text(), "tlsKey": key.read_text()}
    try:
        prod_stack.up(secrets=tls)
        assert prod_stack.api_url.startswith("https://127.0.0.1:")
        trusted = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=prod_stack.api_url, verify=trusted, timeout=30) as client:
            assert client.get("/health").status_code == 200
        # The same port no longer speaks plain HTTP.
        plain = prod_stack.api_url.replace("https://", "http://")
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{plain}/health", timeout=10)
        (proxy,) = prod_stack.names("proxy")
        inspected = json.dumps(prod_stack.container(proxy).attrs["Config"]["Cmd"])
        assert "PRIVATE KEY" not in inspected  # the key is not in the command line
    finally:
        prod_stack.up()  # back to plain HTTP for the tests after this one
    assert prod_stack.api_url.startswith("http://127.0.0.1:")


def test_a_new_image_is_deployed_without_a_failed_request_or_a_late_job(
    prod_stack: DeployedStack,
) -> None:
    report = deploy_new_image_under_probe(prod_stack)
    assert {"api-1", "api-2", "worker-1", "worker-2"} <= set(report["replaced"]), report
    assert_deploy_kept_its_promises(report)
