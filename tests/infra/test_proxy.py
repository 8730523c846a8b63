"""The front door: HAProxy owns the API port on both targets, its configuration rendered by the
program (infra/proxy.py), TLS from secrets only."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from app.config import Settings
from infra import proxy
from infra.config import StackConfigError
from infra.spec import API_ALIAS, API_PORT
from tests.infra.pulumi_mocks import (
    SERVICE,
    ProgramMocks,
    ProgramRun,
    Registration,
    container_env,
    run_program,
    without_secrets,
)
from tests.infra.stacks import (
    PROD_SECRETS,
    TLS_SECRETS,
    assert_second_run_identical,
    role_containers,
    run_stack,
    stack_file_config,
    uploaded_files,
)


def with_tls(target: str = "docker", **overrides: Any) -> ProgramRun:
    config = {**stack_file_config("prod"), "target": target, **overrides}
    return run_program(config, stack="prod", secrets={**PROD_SECRETS, **TLS_SECRETS})


def proxy_container(run: ProgramRun) -> Registration:
    (container,) = run.role("proxy")
    return container


def rendered(run: ProgramRun) -> str:
    return container_env(proxy_container(run))[proxy.CONFIG_ENV]


# --- Who publishes what ---------------------------------------------------------------------------


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_only_the_proxy_publishes_the_api_port(stack: str) -> None:
    run = run_stack(stack)
    published = {
        container.name: [int(p["external"]) for p in container.plain.get("ports") or []]
        for container in role_containers(run)
    }
    owners = [name for name, ports in published.items() if 8000 in ports]
    assert owners == ["proxy"]
    (port,) = proxy_container(run).plain["ports"]
    assert (port["internal"], port["ip"]) == (proxy.HTTP_PORT, "127.0.0.1")
    apis = run.role("api")
    assert len(apis) == 2
    for api in apis:
        assert not api.plain.get("ports"), api.name
        app = next(n for n in api.plain["networksAdvanced"] if "aliases" in n)
        assert app["aliases"] == [API_ALIAS]


def test_the_proxy_resolves_the_copies_by_their_alias_on_the_app_network() -> None:
    run = run_stack("prod")
    container = proxy_container(run)
    assert container_env(container)[proxy.API_HOST_ENV] == API_ALIAS
    # The app network only: the proxy never reaches PostgreSQL or Redis.
    assert len(container.plain["networksAdvanced"]) == 1
    assert "server-template api- 1-6" in rendered(run)  # 2 copies, old and new, and spares
    assert f'"${{{proxy.API_HOST_ENV}}}:{API_PORT}"' in rendered(run)


def test_the_proxy_is_created_once_the_api_answers_and_waited_for() -> None:
    run = run_stack("prod")
    container = proxy_container(run)
    assert {a.urn for a in run.role("api")} <= container.dependencies
    assert container.plain["wait"] is True
    assert container.plain["healthcheck"]["tests"][:2] == ["CMD", "bash"]
    assert container.plain["stopSignal"] == "SIGUSR1"  # HAProxy's soft stop


def test_the_proxy_is_hardened_in_prod() -> None:
    inputs = proxy_container(run_stack("prod")).plain
    assert inputs["user"] == "99:99"
    assert inputs["readOnly"] is True
    assert inputs["capabilities"]["drops"] == ["ALL"]
    # It writes its configuration to the private tmpfs, not the image.
    assert "/tmp" in inputs["tmpfs"]  # noqa: S108 - a path inside the container
    assert inputs["command"][:2] == ["sh", "-c"]
    assert f"-f {proxy.CONFIG_PATH}" in inputs["command"][2]


# --- The rendered configuration -------------------------------------------------------------------


def test_front_door_settings_reach_the_configuration() -> None:
    run = run_stack("prod", proxyRequestTimeoutSeconds=7, proxyMaxBodyKb=128, proxyAccessLog="off")
    text = rendered(run)
    assert "timeout http-request 7s" in text
    assert "req.hdr_val(content-length) gt 131072" in text
    assert "req.body_size gt 131072" in text
    assert "option httplog" not in text
    default = rendered(run_stack("prod"))
    assert "timeout http-request 10s" in default
    assert "gt 65536" in default
    # prod logs the abnormal requests only; dev logs every one.
    assert "option httplog\n    option dontlog-normal" in default
    every = rendered(run_stack("dev"))
    assert "option httplog" in every
    assert "dontlog-normal" not in every


def test_failed_connections_are_retried_elsewhere_and_stopping_copies_dropped() -> None:
    text = rendered(run_stack("prod"))
    assert "retry-on conn-failure empty-response" in text
    assert "option redispatch" in text
    assert "option httpchk GET /health" in text
    assert "nameserver embedded 127.0.0.11:53" in text
    assert "hold obsolete 0s" in text
    assert "option http-buffer-request" in text
    assert "set-header Retry-After 1 if { status 503 }" in text


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_connections_to_the_copies_are_kept_for_reuse_under_load(stack: str) -> None:
    # At HAProxy's default ratios, 500 clients made it open a connection to a copy per request.
    text = rendered(run_stack(stack))
    assert "tune.pool-low-fd-ratio 90" in text
    assert "tune.pool-high-fd-ratio 95" in text


def test_a_copy_gets_no_more_requests_at_once_than_its_processes_admit() -> None:
    # The API's own bound (app/config.py) and the proxy's idea of it are one number.
    admitted = Settings.model_fields["max_concurrent_requests"].default
    assert admitted == proxy.REQUESTS_PER_API_PROCESS
    assert " maxconn 64\n" in rendered(run_stack("prod"))
    assert " maxconn 192\n" in rendered(run_stack("prod", apiWorkers=3))
    # The rest wait in HAProxy's queue, 2 s at most, as long as the API waits for a connection.
    assert "timeout queue 2s" in rendered(run_stack("dev"))
    assert Settings.model_fields["readiness_timeout_seconds"].default == 2


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_requests_go_to_the_least_busy_copy_and_finished_polls_are_answered_from_a_cache(
    stack: str,
) -> None:
    text = rendered(run_stack(stack))
    assert "balance leastconn" in text
    backend = text[text.index("backend api") :]
    # Only GET /task answers, and only as the API's Cache-Control allows (app/api/finished_jobs.py).
    assert "http-request cache-use finished_jobs if { path_beg /task/ }" in backend
    assert "http-response cache-store finished_jobs" in backend
    cache = text[text.index("cache finished_jobs") : text.index("\ndefaults\n")]
    assert f"total-max-size {proxy.CACHE_MB}\n" in cache
    assert f"max-age {proxy.CACHE_MAX_AGE_SECONDS}\n" in cache


def test_the_configuration_is_a_pure_function_of_the_settings() -> None:
    settings = proxy.ProxyConfig(
        api_port=8000,
        replicas=3,
        processes_per_replica=1,
        request_timeout_seconds=5,
        max_body_bytes=1024,
        access_log="all",
        tls=False,
    )
    assert proxy.render(settings) == proxy.render(settings)
    assert "$" not in proxy.render(settings).replace("${" + proxy.API_HOST_ENV + "}", "")


def test_a_second_run_with_tls_registers_identical_inputs() -> None:
    config = {**stack_file_config("prod")}
    secrets = {**PROD_SECRETS, **TLS_SECRETS}
    assert_second_run_identical(
        lambda mocks: run_program(config, stack="prod", secrets=secrets, mocks=mocks)
    )


# --- TLS ------------------------------------------------------------------------------------------


def test_plain_http_without_a_certificate() -> None:
    run = run_stack("prod")
    assert f"bind :{proxy.HTTP_PORT}\n" in rendered(run)
    assert "ssl" not in rendered(run)
    assert run.stack_outputs["apiUrl"] == "http://127.0.0.1:8000"


def test_tls_from_secrets_on_the_docker_target() -> None:
    run = with_tls()
    container = proxy_container(run)
    assert f"bind :{proxy.HTTPS_PORT} ssl crt {proxy.TLS_PEM_PATH}" in rendered(run)
    (port,) = container.plain["ports"]
    assert (port["internal"], port["external"]) == (proxy.HTTPS_PORT, 8000)
    assert run.stack_outputs["apiUrl"] == "https://127.0.0.1:8000"
    # The chain and key reach the container only as a secret file, copied to the tmpfs at start;
    # never in its environment.
    pem = uploaded_files(run, container)["/run/secrets/tls_pem"]
    assert pem.startswith("-----BEGIN CERTIFICATE-----")
    assert pem.endswith("KEY-----\n")
    for value in TLS_SECRETS.values():
        for registration in run.registrations:
            assert value.splitlines()[1] not in json.dumps(without_secrets(registration.inputs))
        assert value.splitlines()[1] not in json.dumps(container.plain)
    assert f"cat /run/secrets/tls_pem > {proxy.TLS_PEM_PATH}" in container.plain["command"][2]


def test_tls_from_a_swarm_secret_file() -> None:
    run = with_tls(target="swarm", backupRepository="repository-host")
    spec = run.named("proxy", SERVICE).plain["taskSpec"]["containerSpec"]
    (mount,) = spec["secrets"]
    assert (mount["fileName"], mount["fileUid"], mount["fileMode"]) == ("tls_pem", "99", 0o400)
    assert "cat /run/secrets/tls_pem" in spec["args"][2]
    assert "BEGIN" not in json.dumps(spec.get("env") or {})
    for value in TLS_SECRETS.values():
        for registration in run.registrations:
            assert value.splitlines()[1] not in json.dumps(without_secrets(registration.inputs))


def test_a_certificate_without_its_key_is_refused() -> None:
    secrets = {**PROD_SECRETS, "tlsCertificate": TLS_SECRETS["tlsCertificate"]}
    with pytest.raises(StackConfigError) as failure:
        run_program(stack_file_config("prod"), stack="prod", secrets=secrets, mocks=ProgramMocks())
    assert "taskstack:tlsKey: TLS needs both tlsCertificate and tlsKey" in str(failure.value)
    assert "pulumi config set --secret taskstack:tlsKey" in str(failure.value)


def test_prod_needs_two_api_copies() -> None:
    with pytest.raises(StackConfigError) as failure:
        run_stack("prod", apiReplicas=1)
    assert "taskstack:apiReplicas: a prod stack runs 2 API copies at least" in str(failure.value)
    assert len(run_stack("dev", apiReplicas=1).role("api")) == 1


def test_haproxy_accepts_the_rendered_configuration(tmp_path: Path) -> None:
    # HAProxy's own check (`haproxy -c`) of what the program renders, in the proxy image; the
    # engine and the image are what `make test` prepares (.ci/run), never skipped.
    config = door_config(client_max_concurrent=64)
    rendered = tmp_path / "haproxy.cfg"
    rendered.write_text(proxy.render(config))
    rendered.chmod(0o644)
    tmp_path.chmod(0o755)
    docker_cli = shutil.which("docker") or "/usr/bin/docker"
    command = [docker_cli, "run", "--rm", "--network", "none"]
    command += ["-e", f"{proxy.API_HOST_ENV}={API_ALIAS}", "-v", f"{rendered}:/etc/h.cfg:ro"]
    command += ["haproxy:3.0", "haproxy", "-c", "-f", "/etc/h.cfg"]
    checked = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_key_holders_finished_job_is_kept_under_its_own_key_for_as_long_as_a_key_is_trusted() -> (
    None
):
    backend = proxy.render(door_config())
    backend = backend[backend.index("backend api") :]
    # Looked up and stored under the path prefixed with the client's hash, the Authorization
    # header set aside around the lookup (HAProxy skips any request that has one) and put back.
    lookup = backend.index("http-request cache-use finished_jobs")
    assert backend.index("http-request del-header authorization") < lookup
    assert backend.index("set-path /%[var(txn.client)]%[var(txn.task_path)]") < lookup
    assert lookup < backend.index("http-request set-path %[var(txn.task_path)]")
    assert lookup < backend.index("http-request set-header authorization %[var(txn.authorization)]")
    # Kept as long as an API process trusts a key it has checked: a revoked key is refused at the
    # door as soon as at a copy.
    trusted = Settings.model_fields["api_key_cache_seconds"].default
    assert trusted == proxy.CLIENT_CACHE_SECONDS
    assert f"cache-control s-maxage={proxy.CLIENT_CACHE_SECONDS} if" in backend


def test_the_door_counts_each_client_by_a_hash_of_its_key() -> None:
    rendered = proxy.render(door_config(client_max_concurrent=7))
    assert "req.hdr(authorization),sha2(256),hex" in rendered
    assert "if { sc0_trackers(clients) gt 7 }" in rendered
    assert "status 429" in rendered


def door_config(client_max_concurrent: int = 64) -> proxy.ProxyConfig:
    """A prod-like front door: two copies of one process, plain HTTP."""
    return proxy.ProxyConfig(
        api_port=API_PORT,
        replicas=2,
        processes_per_replica=1,
        request_timeout_seconds=10,
        max_body_bytes=64 * 1024,
        access_log="errors",
        tls=False,
        client_max_concurrent=client_max_concurrent,
    )
