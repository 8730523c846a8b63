"""The alert rules Prometheus evaluates, as data (`rules(settings)`); infra/monitoring.py renders
them into rules.yml. docs/observability.md "Alerts" is their table, tests/infra/alert_rules_test.yml
proves each one. Stack-wide gauges are served by every API copy, so each rule takes their `max`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from infra.monitoring import MonitoringSettings


def _rule(
    alert: str,
    expr: str,
    *,
    for_: str | None,
    severity: Literal["critical", "warning"],
    summary: str,
    description: str,
) -> dict[str, Any]:
    rule: dict[str, Any] = {"alert": alert, "expr": expr}
    if for_ is not None:
        rule["for"] = for_
    rule["labels"] = {"severity": severity}
    rule["annotations"] = {"summary": summary, "description": description}
    return rule


def _number(value: float) -> str:
    """A threshold as PromQL reads it (no exponent, no trailing .0)."""
    return format(value, "f").rstrip("0").rstrip(".") if isinstance(value, float) else str(value)


def worker_and_queue_rules(s: MonitoringSettings) -> list[dict[str, Any]]:
    """The job path: workers alive, queues, jobs waiting, the outbox."""
    depth = "max by (queue) (taskstack_queue_depth)"
    depth_before = "max by (queue) (taskstack_queue_depth offset 1m)"
    return [
        _rule(
            "NoWorkerAlive",
            # `or vector(0)`: no API copy reporting the gauge counts as no worker seen alive.
            "(max(taskstack_workers_alive) or vector(0)) == 0",
            for_="1m",
            severity="critical",
            summary="No worker is alive",
            description=(
                "No worker has had a fresh liveness heartbeat for 1 minute"
                " (taskstack_workers_alive = {{ $value }}, or no API copy reports it):"
                " jobs are accepted but none runs."
            ),
        ),
        _rule(
            "QueueDepthRising",
            # Rising for 5 minutes: deeper than one minute before at every evaluation for 5
            # minutes. A queue that jumps and then drains slowly is not rising, though a
            # regression slope over 5m (deriv) stays positive for minutes after the jump; one
            # that stays deep but flat is not rising either (tests/infra/alert_rules_test.yml).
            f"{depth} > {depth_before}\nand {depth} > {s.queue_depth_floor}\n",
            for_="5m",
            severity="warning",
            summary="Queue {{ $labels.queue }} keeps growing",
            description=(
                "Queue {{ $labels.queue }} has grown every minute for 5 minutes and holds"
                " {{ $value | humanize }} messages: the workers do not keep up."
            ),
        ),
        _rule(
            "OldestPendingJobTooOld",
            f"max(taskstack_oldest_pending_job_age_seconds) > {s.oldest_pending_job_seconds}",
            for_=None,
            severity="critical",
            summary="A job has waited too long to start",
            description=(
                "The oldest job not yet started has waited {{ $value | humanizeDuration }}"
                f" (threshold {s.oldest_pending_job_seconds}s)."
            ),
        ),
        _rule(
            "OutboxBacklogOld",
            f"max(taskstack_outbox_oldest_age_seconds) > {s.outbox_oldest_seconds}",
            for_="1m",
            severity="critical",
            summary="Accepted jobs are not reaching the broker",
            description=(
                "The oldest outbox row not yet pushed to the broker is"
                " {{ $value | humanizeDuration }} old"
                f" (threshold {s.outbox_oldest_seconds}s): is Redis reachable?"
            ),
        ),
    ]


def failure_rules(s: MonitoringSettings) -> list[dict[str, Any]]:
    """Ratios and latency, each counted only above a minimum volume of traffic."""
    finished = "sum(increase(taskstack_jobs_finished_total[10m]))"
    answered = "sum(increase(taskstack_http_requests_total[5m]))"
    return [
        _rule(
            "JobFailureRatioHigh",
            (
                f'sum(increase(taskstack_jobs_finished_total{{status="failed"}}[10m]))\n'
                f"  / {finished} > {_number(s.job_failure_ratio)}\n"
                f"and {finished} >= {s.job_failure_min_finished}\n"
            ),
            for_="5m",
            severity="warning",
            summary="Many jobs fail",
            description=(
                "{{ $value | humanizePercentage }} of the jobs finished in the last 10 minutes"
                f" failed (threshold {_number(s.job_failure_ratio)},"
                f" counted from {s.job_failure_min_finished} finished jobs)."
            ),
        ),
        _rule(
            "Api5xxRatioHigh",
            (
                f'sum(increase(taskstack_http_requests_total{{status=~"5.."}}[5m]))\n'
                f"  / {answered} > {_number(s.api_5xx_ratio)}\n"
                f"and {answered} >= {s.api_5xx_min_requests}\n"
            ),
            for_="2m",
            severity="critical",
            summary="The API answers many 5xx",
            description=(
                "{{ $value | humanizePercentage }} of the API's answers in the last 5 minutes"
                f" were 5xx (threshold {_number(s.api_5xx_ratio)},"
                f" counted from {s.api_5xx_min_requests} answers)."
            ),
        ),
        _rule(
            "ApiLatencyP99High",
            (
                "histogram_quantile(0.99,\n"
                "  sum by (le) (rate(taskstack_http_request_duration_seconds_bucket[5m]))\n"
                f") > {_number(s.api_latency_p99_seconds)}\n"
            ),
            for_="5m",
            severity="warning",
            summary="The API is slow",
            description=(
                "The API's 99th percentile over 5 minutes is {{ $value | humanizeDuration }}"
                f" (threshold {_number(s.api_latency_p99_seconds)}s)."
            ),
        ),
    ]


def availability_rules(s: MonitoringSettings) -> list[dict[str, Any]]:
    """The data stores and every scraped copy."""
    return [
        _rule(
            "PostgresDown",
            "pg_up == 0 or absent(pg_up)",
            for_="1m",
            severity="critical",
            summary="PostgreSQL is down",
            description=(
                "postgres-exporter cannot reach PostgreSQL, or no exporter reports pg_up"
                " (value {{ $value }}: 0 = unreachable, 1 = not reported)."
            ),
        ),
        _rule(
            "RedisDown",
            "redis_up == 0 or absent(redis_up)",
            for_="1m",
            severity="critical",
            summary="Redis is down",
            description=(
                "redis-exporter cannot reach Redis, or no exporter reports redis_up"
                " (value {{ $value }}: 0 = unreachable, 1 = not reported)."
            ),
        ),
        _rule(
            "TargetDown",
            "up == 0",
            for_="2m",
            severity="warning",
            summary="{{ $labels.job }} at {{ $labels.instance }} is not scraped",
            description=(
                "Prometheus has failed to scrape {{ $labels.job }} at {{ $labels.instance }}"
                " for 2 minutes (up = {{ $value }})."
            ),
        ),
    ]


def backup_rules(s: MonitoringSettings) -> list[dict[str, Any]]:
    """The WAL archive and the backups (docs/backup.md); quiet on a stack without them."""
    full_age = s.backup_full_age_hours * 3600
    return [
        _rule(
            "WalArchiveBehind",
            "max(taskstack_wal_archive_oldest_pending_age_seconds)"
            f" > {s.wal_archive_behind_seconds}",
            for_="1m",
            severity="critical",
            summary="WAL is not reaching the backup repository",
            description=(
                "A WAL segment has waited {{ $value | humanizeDuration }} for archive_command"
                f" (threshold {s.wal_archive_behind_seconds}s): commits since then cannot be"
                " recovered if the database's disk is lost. The backup role's and PostgreSQL's"
                " logs say why."
            ),
        ),
        _rule(
            "BackupFullTooOld",
            f'min(taskstack_backup_age_seconds{{kind="full"}}) > {full_age}',
            for_="5m",
            severity="critical",
            summary="The last full backup is too old",
            description=(
                "The newest full backup is {{ $value | humanizeDuration }} old"
                f" (threshold {s.backup_full_age_hours}h): is the backup role running?"
            ),
        ),
        _rule(
            "BackupMissing",
            # Archiving is on but the repository holds no full backup (or none is reported).
            "max(taskstack_wal_archiving) == 1\n"
            'unless on() taskstack_backup_age_seconds{kind="full"}\n',
            for_="1h",
            severity="critical",
            summary="No full backup exists",
            description=(
                "PostgreSQL archives its WAL (taskstack_wal_archiving = {{ $value }}) but the"
                " repository has held no full backup for an hour: nothing can be restored. The"
                " backup role's log says why."
            ),
        ),
    ]


def rules(settings: MonitoringSettings) -> list[dict[str, Any]]:
    """Every alert rule, in the order of docs/observability.md's table."""
    return [
        *worker_and_queue_rules(settings),
        *failure_rules(settings),
        *availability_rules(settings),
        *backup_rules(settings),
    ]
