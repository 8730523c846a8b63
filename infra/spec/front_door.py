"""The front door: HAProxy in front of the API copies, the one role that publishes the API port.

How it finds the copies depends on where the stack runs, and is said here, as a field of the
proxy's description (its `TASKSTACK_API_HOST` and its copies), not patched in by a target.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from infra import proxy
from infra.config import Credentials, StackConfig, Target
from infra.spec.app_roles import API_ALIAS, API_PORT
from infra.spec.model import FileSecrets, HealthCheck, NetworkAttachment, PublishedPort, Service
from infra.spec.shared import (
    FIXED_LIMITS,
    PRIVATE_TMP,
    PROXY_MAX_PROCESSES,
    PROXY_USER,
    SECRETS_DIR,
    Shared,
)


def api_host(target: Target) -> str:
    """The name that resolves to every API copy, as the proxy looks it up in Docker's DNS.

    On one host every copy answers to its network alias. On a swarm `tasks.<alias>` answers with
    every task's own address, in vip and dnsrr modes alike (the alias itself is a virtual IP in
    vip mode), so that HAProxy checks and balances each task.
    """
    return API_ALIAS if target == "docker" else f"tasks.{API_ALIAS}"


@dataclass(frozen=True)
class FrontDoorSettings:
    """What the proxy's configuration sets. `replicas`: one on one host (a host port is bound
    once); on a swarm `proxyReplicas`, host-published, at most one per node."""

    haproxy: proxy.ProxyConfig
    host_port: int
    publish_address: str
    api_host: str
    replicas: int

    @classmethod
    def of(cls, config: StackConfig, tls: bool) -> FrontDoorSettings:
        return cls(
            haproxy=proxy_config(config, tls),
            host_port=config.api_port,
            publish_address=config.publish_address,
            api_host=api_host(config.target),
            replicas=1 if config.target == "docker" else config.proxy_replicas,
        )


def proxy_config(config: StackConfig, tls: bool) -> proxy.ProxyConfig:
    return proxy.ProxyConfig(
        api_port=API_PORT,
        replicas=config.api_replicas,
        processes_per_replica=config.api_workers,
        request_timeout_seconds=config.proxy_request_timeout_seconds,
        max_body_bytes=config.proxy_max_body_kb * 1024,
        access_log=config.proxy_access_log,
        tls=tls,
        client_max_concurrent=config.proxy_client_max_concurrent,
    )


def tls_pem(credentials: Credentials) -> pulumi.Output[str] | None:
    """The certificate chain and its key in one PEM, as HAProxy's `crt` reads it."""
    if credentials.tls_certificate is None or credentials.tls_key is None:
        return None
    return pulumi.Output.secret(
        pulumi.Output.all(credentials.tls_certificate, credentials.tls_key).apply(
            lambda pair: f"{pair[0].strip()}\n{pair[1].strip()}\n"
        )
    )


def _tls_files(pem: pulumi.Output[str] | None) -> FileSecrets:
    if pem is None:
        return FileSecrets(files={})
    return FileSecrets(
        files={"tls_pem": "tls_pem"}, command=proxy.start_command(f"cat {SECRETS_DIR}/tls_pem")
    )


def front_door(
    settings: FrontDoorSettings, shared: Shared, pem: pulumi.Output[str] | None
) -> Service:
    haproxy = settings.haproxy
    return Service(
        role="proxy",
        image="proxy",
        command=proxy.start_command(None),
        env={
            proxy.CONFIG_ENV: proxy.render(haproxy),
            proxy.API_HOST_ENV: settings.api_host,
        },
        user=PROXY_USER,
        networks=(NetworkAttachment("app", (proxy.ALIAS,)),),
        hardening=shared.hardening,
        restart=shared.restart,
        labels=shared.labels("proxy"),
        healthcheck=HealthCheck(
            test=proxy.HEALTHCHECK, interval="5s", timeout="5s", retries=3, start_period="10s"
        ),
        wait_healthy=True,
        ports=(
            PublishedPort(
                settings.haproxy.listen_port, settings.host_port, settings.publish_address
            ),
        ),
        tmpfs=PRIVATE_TMP,
        limits=shared.limits(FIXED_LIMITS["proxy"]),
        replicas=settings.replicas,
        # Created once the API answers, so the first request after `up` finds a copy.
        depends_on=("api",),
        file_secrets=_tls_files(pem),
        # HAProxy's soft stop (the image's STOPSIGNAL): open connections finish first.
        stop_signal="SIGUSR1",
        stop_grace_seconds=30,
        max_processes=PROXY_MAX_PROCESSES,
    )
