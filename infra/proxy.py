"""The front door: HAProxy's configuration, rendered from `infra/haproxy.cfg.tmpl`.

The proxy owns the API's published port; the API copies publish nothing. HAProxy finds the copies
through Docker's embedded DNS (a name every copy answers to), checks each one's `/health`, drops a
copy that stops answering, and sends a request whose connection was refused or closed before any
byte of the answer to another copy. It answers again the GET /task of a finished job it has seen
(for as long as the API's Cache-Control allows; a key holder's only to that key, for seconds). It
also cuts off slow clients (`timeout http-request`), refuses bodies above the limit (413) and writes
an access log to its stdout (every request, or by default only the abnormal ones:
`proxyAccessLog`).

Why HAProxy rather than nginx 1.26 or Caddy 2.6 is in docs/infra.md ("The front door").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from string import Template

from infra.config import ProxyAccessLog

TEMPLATE = Path(__file__).with_name("haproxy.cfg.tmpl")

# Inside the proxy container: unprivileged ports (every capability is dropped in prod).
HTTP_PORT = 8080
HTTPS_PORT = 8443
HEALTH_PORT = 8404
# HAProxy's own Prometheus exporter, for Prometheus on the app network (never published).
METRICS_PORT = 8405
# The name Prometheus finds every proxy by.
ALIAS = "proxy"
CONFIG_PATH = "/tmp/haproxy.cfg"  # noqa: S108 - the container's private tmpfs
TLS_PEM_PATH = "/tmp/tls.pem"  # noqa: S108 - written mode 0600 at start, from a secret
# The environment variable that names the API copies for HAProxy's DNS lookups; the description
# says its value per target (infra/spec/front_door.py `api_host`).
API_HOST_ENV = "TASKSTACK_API_HOST"
CONFIG_ENV = "HAPROXY_CONFIG"
# What each API process admits at once (app/config.py `max_concurrent_requests`, its default; a
# test holds the two equal). HAProxy sends a copy no more than its processes admit and keeps the
# rest in its own queue, where waiting costs the copies nothing: answering 503s at once to clients
# that retry at once took the CPU from the admitted requests (measured: RELIABILITY.md, "Overload
# and slow clients").
REQUESTS_PER_API_PROCESS = 64
# The longest a request waits in that queue before HAProxy's 503 (with Retry-After): the same
# bound as the API's wait for a pooled connection (app/storage/db.py), well under a client's
# patience.
QUEUE_TIMEOUT_SECONDS = 2
# Request headers beyond the body: what one buffer holds on top of the largest body.
_HEADER_ROOM = 16 * 1024
# The proxy's cache of finished jobs' GET /task answers (a few hundred bytes each, in blocks of
# 1 KiB): about 16,000 of them in 16 MB of the proxy's memory; none is kept over an hour, and
# none past the moment the API says (its job's purge).
CACHE_MB = 16
CACHE_OBJECT_BYTES = 16 * 1024
CACHE_MAX_AGE_SECONDS = 3600
# How long the door keeps a key holder's finished job: as long as an API process trusts a key it
# has checked (app/config.py `api_key_cache_seconds`, its default; a test holds the two equal).
CLIENT_CACHE_SECONDS = 2
# The clients the door keeps a count of (a key's hash, or an address): the least recent go first.
CLIENT_TABLE_SIZE = 100_000


@dataclass(frozen=True)
class ProxyConfig:
    """What the rendered configuration depends on."""

    api_port: int  # the API copies' own port
    replicas: int  # API copies; twice as many (old and new) exist during a deployment
    processes_per_replica: int  # uvicorn processes in each copy (`apiWorkers`)
    request_timeout_seconds: int
    max_body_bytes: int
    access_log: ProxyAccessLog
    tls: bool
    # Requests in flight at once per client through the door (429 beyond).
    client_max_concurrent: int = 64

    @property
    def listen_port(self) -> int:
        return HTTPS_PORT if self.tls else HTTP_PORT


def render(config: ProxyConfig) -> str:
    """haproxy.cfg for `config` (a pure function: same settings, same text, so a second `up` sees
    no change)."""
    if config.tls:
        bind = f"    bind :{HTTPS_PORT} ssl crt {TLS_PEM_PATH} alpn http/1.1"
    else:
        bind = f"    bind :{HTTP_PORT}"
    log = {
        "all": "    log global\n    option httplog",
        # HAProxy's own rule: a request is logged unless it ended normally (no error, timeout,
        # abort, retry or redispatch, and no 5xx); what a line per request costs GET /task is
        # measured in docs/bench.md ("The front door's cost").
        "errors": "    log global\n    option httplog\n    option dontlog-normal",
        "off": "    # no access log",
    }[config.access_log]
    return Template(TEMPLATE.read_text()).substitute(
        maxconn=2000,
        bufsize=config.max_body_bytes + _HEADER_ROOM,
        log_lines=log,
        request_timeout=config.request_timeout_seconds,
        bind_line=bind,
        max_body_bytes=config.max_body_bytes,
        # Room for every old and new copy during a deployment, and a spare.
        slots=2 * config.replicas + 2,
        server_maxconn=REQUESTS_PER_API_PROCESS * config.processes_per_replica,
        queue_timeout=QUEUE_TIMEOUT_SECONDS,
        api_port=config.api_port,
        health_port=HEALTH_PORT,
        metrics_port=METRICS_PORT,
        cache_mb=CACHE_MB,
        cache_object_bytes=CACHE_OBJECT_BYTES,
        cache_max_age=CACHE_MAX_AGE_SECONDS,
        client_cache_seconds=CLIENT_CACHE_SECONDS,
        client_max_concurrent=config.client_max_concurrent,
        client_table_size=CLIENT_TABLE_SIZE,
    )


def start_command(tls_source: str | None) -> tuple[str, ...]:
    """The container's command: write the configuration (and the certificate, from `tls_source`,
    a shell expression) to the private tmpfs, then run HAProxy in the foreground (master-worker,
    as the official image's entrypoint does). The root filesystem stays read-only."""
    script = f'umask 077; printf "%s\\n" "${CONFIG_ENV}" > {CONFIG_PATH}'
    if tls_source is not None:
        script += f"; {tls_source} > {TLS_PEM_PATH}"
    script += f"; exec haproxy -W -db -f {CONFIG_PATH}"
    return ("sh", "-c", script)


# The healthcheck: the image has no curl; bash's /dev/tcp asks the health frontend on loopback.
HEALTHCHECK = (
    "CMD",
    "bash",
    "-c",
    f"exec 3<>/dev/tcp/127.0.0.1/{HEALTH_PORT} "
    '&& printf "GET /healthz HTTP/1.0\\r\\n\\r\\n" >&3 && head -n 1 <&3 | grep -q " 200 "',
)
