"""Settings from the environment (and an optional `.env` or `/run/secrets/<name>` files)."""

import sys
from functools import lru_cache
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Swarm and Compose mount secrets as files here: a file named like a setting (`database_url`)
# sets it. The Pulumi program mounts them here too (infra/spec).
SECRETS_DIR = Path("/run/secrets")
# The largest request body the API reads (413 beyond, before it is read into memory); the largest
# valid one (a notification of 2000 characters, JSON-escaped) is well under it. The proxy's default
# cap (infra/config `proxyMaxBodyKb`) is this one.
MAX_REQUEST_BODY_BYTES = 64 * 1024
# The shortest initial API key accepted: as random as the keys `python -m app.keys` makes.
MIN_API_KEY_LENGTH = 32


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        extra="ignore",
        secrets_dir=SECRETS_DIR if SECRETS_DIR.is_dir() else None,
    )

    database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/taskstack"
    # The migration only: the administrator that makes the app's role (app/storage/roles.py).
    admin_database_url: SecretStr | None = None
    database_pool_size: int = Field(default=10, ge=1, le=200)
    database_max_overflow: int = Field(default=10, ge=0, le=200)
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Empty means "same as REDIS_URL" (the tutorial's compose file sets all three to one Redis).
    celery_broker_url: str = ""
    celery_result_backend: str = ""

    job_work_seconds: float = Field(default=0.5, ge=0, le=3600)
    job_max_retries: int = Field(default=3, ge=0, le=100)
    job_retry_backoff_seconds: int = Field(default=2, ge=1, le=3600)
    job_retry_backoff_max_seconds: int = Field(default=60, ge=1, le=3600)
    result_expires_seconds: int = Field(default=86400, ge=60)
    visibility_timeout_seconds: int = Field(default=3600, ge=10)

    reaper_interval_seconds: float = Field(default=60, gt=0)
    reaper_stale_after_seconds: float = Field(default=600, gt=0)
    reaper_batch_size: int = Field(default=1000, ge=1, le=100_000)
    job_retention_days: float = Field(default=7, ge=0)
    # Finished jobs' GET /task answers kept per API process (app/api/finished_jobs.py); 0 turns it
    # off.
    finished_job_cache_size: int = Field(default=10_000, ge=0, le=1_000_000)
    purge_interval_seconds: float = Field(default=86400, gt=0)
    idempotency_key_retention_hours: float = Field(default=24, gt=0)
    # The outbox relay of each API process (app/intake/outbox.py).
    outbox_relay_interval_seconds: float = Field(default=0.5, gt=0, le=60)
    outbox_relay_after_seconds: float = Field(default=5, gt=0, le=3600)
    beat_schedule_path: Path = Path("/tmp/celerybeat-schedule")  # noqa: S108 - the writable tmpfs

    worker_heartbeat_path: Path = Path("/tmp/celery-worker-heartbeat")  # noqa: S108
    worker_heartbeat_seconds: float = Field(default=2, gt=0, le=60)
    # A worker silent this long is dead: its unacknowledged messages go back to the queue
    # (app/worker/liveness.py).
    worker_dead_after_seconds: float = Field(default=6, gt=0, le=3600)
    readiness_timeout_seconds: float = Field(default=2, gt=0, le=60)
    # Admission control of each API process (app/api/admission.py): beyond these, 503 at once.
    max_concurrent_requests: int = Field(default=64, ge=1, le=10_000)
    max_concurrent_job_lists: int = Field(default=4, ge=1, le=1_000)
    # The worker's /metrics (app/metrics/worker.py), served by its Celery main process; 0: off.
    metrics_port: int = Field(default=9808, ge=0, le=65535)
    # API keys (app/api/auth.py): off in dev, so the tutorial's client works without one.
    auth_required: bool = False
    # The migration only: stored (hashed) as the key named `initial` (app/storage/api_keys.py).
    initial_api_key: SecretStr | None = None
    # How long each API process answers from its copy of the keys: a new or revoked key takes
    # effect within this.
    api_key_cache_seconds: float = Field(default=2, gt=0, le=60)
    # Each key's limits unless the key sets its own (`python -m app.keys create`): its requests
    # per second across the stack with bursts of `burst`, its requests in flight per API process.
    api_key_rate_per_second: float = Field(default=100, gt=0, le=1_000_000)
    api_key_burst: int = Field(default=200, ge=1, le=1_000_000)
    api_key_max_concurrent: int = Field(default=16, ge=1, le=10_000)
    # /docs, /redoc and /openapi.json; 404 when off.
    api_docs: bool = True
    # Read by Flower itself from the environment; declared here so a malformed value fails early.
    flower_basic_auth: SecretStr | None = None
    # Logs (app/logs.py): JSON lines or text; the role each line names (empty: from the command).
    log_format: Literal["text", "json"] = "text"
    log_role: Literal["api", "worker", "beat", "flower", "migrate"] | None = None
    # Traces (app/tracing.py): exported over OTLP/HTTP only when set (e.g. http://collector:4318).
    otlp_endpoint: str | None = None

    @property
    def database_libpq_url(self) -> str:
        """DATABASE_URL as the drivers themselves read it (`postgresql://...`): the hot paths'
        asyncpg (app/storage/pg.py) and psycopg (app/storage/db.py) connections, which bypass
        SQLAlchemy."""
        return "postgresql://" + self.database_url.split("://", 1)[1]

    @field_validator("database_url")
    @classmethod
    def _psycopg_driver(cls, value: str) -> str:
        for prefix in ("postgresql://", "postgres://"):
            if value.startswith(prefix):
                return "postgresql+psycopg://" + value.removeprefix(prefix)
        if not value.startswith("postgresql+psycopg://"):
            raise ValueError("must start with postgresql+psycopg:// or postgresql://")
        return value

    @field_validator("admin_database_url")
    @classmethod
    def _admin_psycopg_driver(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        return SecretStr(cls._psycopg_driver(value.get_secret_value()))

    @field_validator("redis_url", "celery_broker_url", "celery_result_backend")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if value and not value.startswith(("redis://", "rediss://")):
            raise ValueError("must start with redis:// or rediss://")
        return value

    @field_validator("log_role", "otlp_endpoint", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return value or None

    @field_validator("initial_api_key")
    @classmethod
    def _long_random_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        key = value.get_secret_value()
        # Stored as a plain SHA-256, which is only safe for a key nobody can guess.
        if (
            len(key) < MIN_API_KEY_LENGTH
            or not key.isascii()
            or not key.isprintable()
            or " " in key
        ):
            raise ValueError(
                f"must be a random token of at least {MIN_API_KEY_LENGTH} printable ASCII "
                "characters without spaces"
            )
        return value

    @field_validator("flower_basic_auth")
    @classmethod
    def _user_colon_password(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value():
            for pair in value.get_secret_value().split(","):
                user, sep, password = pair.partition(":")
                if not (user and sep and password):
                    raise ValueError("must be user:password[,user:password...]")
        return value

    @model_validator(mode="after")
    def _defaults_and_consistency(self) -> Self:
        self.celery_broker_url = self.celery_broker_url or self.redis_url
        self.celery_result_backend = self.celery_result_backend or self.redis_url
        if self.job_retry_backoff_max_seconds >= self.visibility_timeout_seconds:
            # Redis would redeliver a retry still waiting for its countdown.
            raise ValueError(
                "JOB_RETRY_BACKOFF_MAX_SECONDS must be below VISIBILITY_TIMEOUT_SECONDS"
            )
        if self.worker_dead_after_seconds <= self.worker_heartbeat_seconds:
            # A live worker would be taken for dead between two of its heartbeats.
            raise ValueError("WORKER_DEAD_AFTER_SECONDS must exceed WORKER_HEARTBEAT_SECONDS")
        return self


def _variable(location: tuple[int | str, ...]) -> str:
    # Cross-field checks have an empty location; their message names the variables.
    return "_".join(str(part) for part in location).upper() or "(several)"


def load_settings() -> Settings:
    """Settings, or exit with a message naming each malformed variable."""
    try:
        return Settings()
    except ValidationError as error:
        problems = "; ".join(
            f"Invalid setting {_variable(problem['loc'])}: {problem['msg']}"
            for problem in error.errors()
        )
        sys.exit(problems)


@lru_cache
def get_settings() -> Settings:
    return load_settings()
