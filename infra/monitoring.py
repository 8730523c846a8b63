"""Monitoring configuration: Prometheus's scrape and alert rules, Alertmanager's routing, and the
web config that puts either behind basic auth, rendered as text from a few settings.

Pure functions, no Pulumi resources: a target mounts the text where the config names it. Nothing
secret is ever part of the text: a password is named by the file that holds it (`password_file`,
`url_file`), and a web config holds a bcrypt hash whose salt derives from the password, so the same
password renders the same text on every `pulumi up` (a random salt would be a diff every time).

Jobs, ports and metric names are the contract of docs/observability.md; its "Alerts" table lists
every rule (infra/monitoring_rules.py) with the setting of its threshold.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import bcrypt
import yaml

from infra import monitoring_rules

Target = Literal["docker", "swarm"]

PROMETHEUS_PORT = 9090
ALERTMANAGER_PORT = 9093
ALERTMANAGER_ALIAS = "alertmanager"
# Where the Prometheus container finds the rules (rule_files); a target mounts them there.
RULES_PATH = "/etc/prometheus/rules.yml"
# How often Prometheus asks DNS again for the copies behind a name (a new copy is scraped after
# at most this long).
DNS_REFRESH_INTERVAL = "30s"


@dataclass(frozen=True)
class ScrapeJob:
    """One role scraped at every copy: the DNS name its copies answer to and its metrics port."""

    job: str
    alias: str
    port: int
    metrics_path: str = "/metrics"


# The scrape contract (docs/observability.md "Metrics"); Prometheus scrapes itself on localhost
# and Alertmanager through ALERTMANAGER_ALIAS, both possibly behind basic auth.
SCRAPE_JOBS: tuple[ScrapeJob, ...] = (
    ScrapeJob("api", "api", 8000),
    ScrapeJob("worker", "worker", 9808),
    ScrapeJob("proxy", "proxy", 8405),
    ScrapeJob("postgres-exporter", "postgres-exporter", 9187),
    ScrapeJob("redis-exporter", "redis-exporter", 9121),
)

_DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")


def _check_duration(name: str, value: str) -> None:
    if not _DURATION.match(value) or not re.search(r"[1-9]", value):
        raise ValueError(f"{name} must be a positive Prometheus duration (15s, 5m): {value!r}")


@dataclass(frozen=True)
class MonitoringSettings:
    """What the rendered files depend on; each default is the prod value (stack config keys in
    docs/observability.md "Alerts")."""

    scrape_interval: str = "15s"
    evaluation_interval: str = "15s"
    # QueueDepthRising: a queue rising for 5 minutes pages only above this many messages.
    queue_depth_floor: int = 100
    # OldestPendingJobTooOld: the oldest job not yet started is older than this.
    oldest_pending_job_seconds: int = 300
    # JobFailureRatioHigh: failed / finished over 10 minutes above this ratio, once at least
    # job_failure_min_finished jobs finished in those 10 minutes.
    job_failure_ratio: float = 0.05
    job_failure_min_finished: int = 20
    # Api5xxRatioHigh: 5xx answers / all answers over 5 minutes, once at least
    # api_5xx_min_requests were answered in those 5 minutes.
    api_5xx_ratio: float = 0.01
    api_5xx_min_requests: int = 100
    # ApiLatencyP99High: the 99th percentile of request durations over 5 minutes.
    api_latency_p99_seconds: float = 1.0
    # OutboxBacklogOld: the oldest outbox row not yet pushed to the broker.
    outbox_oldest_seconds: int = 30
    # WalArchiveBehind: a WAL segment waits longer than this to reach the backup repository.
    wal_archive_behind_seconds: int = 300
    # BackupFullTooOld: the newest full backup is older than this.
    backup_full_age_hours: int = 26
    # Alertmanager's route.
    group_wait: str = "10s"
    group_interval: str = "5m"
    repeat_interval: str = "4h"

    def __post_init__(self) -> None:
        durations = ("scrape_interval", "evaluation_interval")
        for name in (*durations, "group_wait", "group_interval", "repeat_interval"):
            _check_duration(name, getattr(self, name))
        for name in ("job_failure_ratio", "api_5xx_ratio"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"{name} must be a ratio between 0 and 1: {getattr(self, name)}")
        for name in (
            "queue_depth_floor",
            "job_failure_min_finished",
            "api_5xx_min_requests",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative: {getattr(self, name)}")
        positive = (
            "oldest_pending_job_seconds",
            "api_latency_p99_seconds",
            "outbox_oldest_seconds",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive: {getattr(self, name)}")


# The stack config key (taskstack:<key>) of each setting, as docs/observability.md names them.
CONFIG_KEYS: dict[str, str] = {
    "queue_depth_floor": "alertQueueDepthFloor",
    "oldest_pending_job_seconds": "alertOldestPendingJobSeconds",
    "job_failure_ratio": "alertJobFailureRatio",
    "job_failure_min_finished": "alertJobFailureMinFinished",
    "api_5xx_ratio": "alertApi5xxRatio",
    "api_5xx_min_requests": "alertApi5xxMinRequests",
    "api_latency_p99_seconds": "alertApiLatencyP99Seconds",
    "outbox_oldest_seconds": "alertOutboxOldestSeconds",
    "wal_archive_behind_seconds": "alertWalArchiveBehindSeconds",
    "backup_full_age_hours": "alertBackupFullAgeHours",
}


@dataclass(frozen=True)
class BasicAuth:
    """Credentials Prometheus sends; the password stays in a file inside its container."""

    username: str
    password_file: str

    def as_config(self) -> dict[str, str]:
        return {"username": self.username, "password_file": self.password_file}


# --- YAML -----------------------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    """Block scalars for multi-line strings (the PromQL of a rule reads as written)."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def _dump(document: dict[str, Any], header: str) -> str:
    body = yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=1000)
    return f"# {header}\n{body}"


# --- prometheus.yml -------------------------------------------------------------------------------


def dns_name(alias: str, target: Target) -> str:
    """The name whose A records are every copy of a role: on docker the network alias (Docker's
    embedded DNS answers with every container that has it), on swarm `tasks.<alias>` (every
    task's own address, whatever the service's endpoint mode)."""
    if target == "docker":
        return alias
    if target == "swarm":
        return f"tasks.{alias}"
    raise ValueError(f"unknown target {target!r}: docker or swarm")


def _dns_sd(alias: str, port: int, target: Target) -> list[dict[str, Any]]:
    return [
        {
            "names": [dns_name(alias, target)],
            "type": "A",
            "port": port,
            "refresh_interval": DNS_REFRESH_INTERVAL,
        }
    ]


def prometheus_config(
    settings: MonitoringSettings,
    target: Target,
    *,
    rules_path: str = RULES_PATH,
    self_auth: BasicAuth | None = None,
    alertmanager_auth: BasicAuth | None = None,
) -> str:
    """prometheus.yml: every copy of every role scraped (found by DNS), the rules at
    `rules_path`, alerts sent to every Alertmanager copy. `self_auth` is what Prometheus's own
    web config asks of its self-scrape, `alertmanager_auth` what Alertmanager's asks (both the
    scrape of Alertmanager and the alerts sent to it)."""
    jobs: list[dict[str, Any]] = [
        {
            "job_name": job.job,
            "metrics_path": job.metrics_path,
            "dns_sd_configs": _dns_sd(job.alias, job.port, target),
        }
        for job in SCRAPE_JOBS
    ]
    prometheus: dict[str, Any] = {
        "job_name": "prometheus",
        "static_configs": [{"targets": [f"localhost:{PROMETHEUS_PORT}"]}],
    }
    if self_auth is not None:
        prometheus["basic_auth"] = self_auth.as_config()
    alertmanager_job: dict[str, Any] = {
        "job_name": "alertmanager",
        "dns_sd_configs": _dns_sd(ALERTMANAGER_ALIAS, ALERTMANAGER_PORT, target),
    }
    alerting: dict[str, Any] = {
        "scheme": "http",
        "api_version": "v2",
        "dns_sd_configs": _dns_sd(ALERTMANAGER_ALIAS, ALERTMANAGER_PORT, target),
    }
    if alertmanager_auth is not None:
        alertmanager_job["basic_auth"] = alertmanager_auth.as_config()
        alerting["basic_auth"] = alertmanager_auth.as_config()
    document = {
        "global": {
            "scrape_interval": settings.scrape_interval,
            "evaluation_interval": settings.evaluation_interval,
        },
        "rule_files": [rules_path],
        "alerting": {"alertmanagers": [alerting]},
        "scrape_configs": [*jobs, prometheus, alertmanager_job],
    }
    return _dump(document, f"Rendered by infra/monitoring.py for the {target} target.")


# --- rules.yml ------------------------------------------------------------------------------------


def alert_rules(settings: MonitoringSettings) -> str:
    """rules.yml: the alerts of docs/observability.md "Alerts" (infra/monitoring_rules.py)."""
    document = {"groups": [{"name": "taskstack", "rules": monitoring_rules.rules(settings)}]}
    return _dump(document, "Rendered by infra/monitoring.py; docs/observability.md lists them.")


# --- alertmanager.yml -----------------------------------------------------------------------------


def alertmanager_config(settings: MonitoringSettings, *, webhook_url_file: str | None) -> str:
    """alertmanager.yml: every alert to one webhook, grouped by alert name, resolved ones too.
    The webhook's URL (often a secret) is read from `webhook_url_file` by Alertmanager; without
    one, alerts are only shown in Alertmanager's own pages."""
    webhooks = [{"url_file": webhook_url_file, "send_resolved": True}] if webhook_url_file else []
    document = {
        "route": {
            "receiver": "webhook",
            "group_by": ["alertname"],
            "group_wait": settings.group_wait,
            "group_interval": settings.group_interval,
            "repeat_interval": settings.repeat_interval,
        },
        "receivers": [
            {
                "name": "webhook",
                **({"webhook_configs": webhooks} if webhooks else {}),
            }
        ],
    }
    return _dump(document, "Rendered by infra/monitoring.py.")


# --- web config (basic auth) ----------------------------------------------------------------------

_BCRYPT_ALPHABET = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_STANDARD_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_TO_BCRYPT = str.maketrans(_STANDARD_ALPHABET, _BCRYPT_ALPHABET)
SALT_LABEL = b"taskstack web-config bcrypt salt"


def deterministic_salt(password: str, *, rounds: int = 10) -> bytes:
    """A bcrypt salt (`$2b$<rounds>$` + 22 characters) derived from the password: 16 bytes of
    HMAC-SHA256(SALT_LABEL, password), in bcrypt's base64 (standard base64's bit order, its own
    alphabet; the 22nd character carries 2 bits and 4 zero bits, as bcrypt writes it)."""
    if not 4 <= rounds <= 31:
        raise ValueError(f"bcrypt rounds must be 4..31: {rounds}")
    digest = hmac.new(SALT_LABEL, password.encode(), hashlib.sha256).digest()[:16]
    encoded = base64.b64encode(digest).decode()[:22].translate(_TO_BCRYPT)
    return f"$2b${rounds:02d}${encoded}".encode()


def bcrypt_hash(password: str, *, rounds: int = 10) -> str:
    """The bcrypt hash of `password`, the same text for the same password (salt:
    `deterministic_salt`). Prometheus and Alertmanager check every request against it (and keep
    the result in a cache), so the cost stays moderate."""
    if not password:
        raise ValueError("an empty password cannot protect anything")
    if len(password.encode()) > 72:
        raise ValueError("bcrypt reads at most 72 bytes of a password")
    return bcrypt.hashpw(password.encode(), deterministic_salt(password, rounds=rounds)).decode()


def web_config(users: Mapping[str, str]) -> str:
    """The `--web.config.file` of Prometheus or Alertmanager: basic-auth users, each with the
    bcrypt hash of its password (`bcrypt_hash`)."""
    for user, hashed in users.items():
        if not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            raise ValueError(
                "web_config takes bcrypt hashes (bcrypt_hash(password)), not passwords"
            )
        if not user or ":" in user:
            raise ValueError(f"a basic-auth user name must be non-empty and without ':': {user!r}")
    return _dump({"basic_auth_users": dict(users)}, "Rendered by infra/monitoring.py.")
