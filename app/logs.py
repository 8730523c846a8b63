"""Logging for every role: one handler on the root logger, JSON lines or text (`LOG_FORMAT`).

Each record carries `role` (api, worker, beat, flower, migrate), and the `request_id`, `job_id` and
`trace_id` of what it was logged for, when there is one: the API's request (contextvars set by
`app.tracing.RequestContext`), the worker's task (set around each run, `app.tracing`). In JSON each
record is one line with the fields `time` (RFC 3339, UTC), `level`, `role`, `logger`, `message`,
those ids when set and `exc_info` (the traceback, one string). Text puts the same on one line.

Nothing a record says may reveal a credential: every line is passed through `Redactor`, which masks
the password of any `scheme://user:password@` URL, anything shaped like an API key (`tsk_...`,
app/storage/api_keys.py: a client may send one in a path, which the access log writes) and every
secret value the settings hold (passwords in DATABASE_URL, REDIS_URL and the broker's,
FLOWER_BASIC_AUTH's, ADMIN_DATABASE_URL's, INITIAL_API_KEY) wherever it appears, also in a
traceback. Nothing logs a key's hash: the records that hold one do not show it. A record's message
is kept on its line (control characters escaped) so that text a user supplied cannot start what
reads as another record.

Configured once per process: by `app.main` for the API (uvicorn's own loggers included, in each
`--workers` child too), by Celery's `setup_logging` signal for the worker and beat
(`app/worker/celery.py`), by `alembic/env.py` for the migration, by `app.monitoring` for Flower.
"""

import contextvars
import logging
import re
import sys
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote, urlsplit

from pythonjsonlogger.json import JsonFormatter

from app.config import Settings, get_settings

ROLES = ("api", "worker", "beat", "flower", "migrate")

# The request the running code serves (the API; app.tracing sets it) and the job a task runs.
request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)
job_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("job_id", default=None)

# Line breaks and other control characters (C0, DEL, C1, and Unicode's line and paragraph
# separators): in a log message they would let text a user supplied (a notification's message)
# start what reads as a record of its own, such as a forged ERROR line.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# The password of a URL's userinfo (`redis://:pw@`, `postgresql://user:pw@`, `amqp://u:pw@`).
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^\s/@:'\"]*:)([^\s/@'\"]+)(@)")
# An API key as app/storage/api_keys.py makes them (`tsk_` and URL-safe base64).
_API_KEY = re.compile(r"tsk_[A-Za-z0-9_-]+")
MASK = "***"
# A secret shorter than this is not searched for verbatim (it would mask common words); its URL
# form is still masked by the pattern above.
MIN_SECRET_LENGTH = 4


def escape_control_characters(text: str) -> str:
    """`text` on one line: each control character as its Python escape (`\\n`, `\\x1b`)."""
    return _CONTROL.sub(lambda match: repr(match.group())[1:-1], text)


def _url_secrets(url: str) -> list[str]:
    try:
        password = urlsplit(url).password
    except ValueError:
        return []
    return [password, unquote(password)] if password else []


def secrets_of(settings: Settings) -> list[str]:
    """The secret values the settings hold, longest first."""
    found: list[str] = []
    for url in (
        settings.database_url,
        settings.redis_url,
        settings.celery_broker_url,
        settings.celery_result_backend,
        settings.admin_database_url.get_secret_value() if settings.admin_database_url else "",
    ):
        found += _url_secrets(url)
    if settings.initial_api_key is not None:
        found.append(settings.initial_api_key.get_secret_value())
    if settings.flower_basic_auth is not None:
        for pair in settings.flower_basic_auth.get_secret_value().split(","):
            found.append(pair.partition(":")[2])
    unique = {secret for secret in found if len(secret) >= MIN_SECRET_LENGTH}
    return sorted(unique, key=len, reverse=True)


class Redactor:
    """Masks URL passwords, API keys and the given secret values (verbatim and as JSON escapes
    them)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        forms: set[str] = set()
        for secret in secrets:
            forms.add(secret)
            forms.add(_json_escaped(secret))
        self.secrets = sorted(forms, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        if "://" in text:
            text = _URL_PASSWORD.sub(rf"\1{MASK}\3", text)
        if "tsk_" in text:
            text = _API_KEY.sub(MASK, text)
        return text


def _json_escaped(text: str) -> str:
    import json

    return json.dumps(text)[1:-1]


class _Context(logging.Filter):
    """Stamps each record with the role and the ids of what it was logged for; in text, escapes
    the message's control characters."""

    def __init__(self, role: str, escape: bool) -> None:
        super().__init__()
        self.role = role
        self.escape = escape

    def filter(self, record: logging.LogRecord) -> bool:
        record.role = self.role
        record.request_id = request_id_var.get()
        record.job_id = job_id_var.get()
        record.trace_id = _trace_id()
        if self.escape and not getattr(record, "control_characters_escaped", False):
            record.msg = escape_control_characters(record.getMessage())
            record.args = None
            record.control_characters_escaped = True
        return True


def _trace_id() -> str | None:
    from app.tracing import current_trace_id

    return current_trace_id()


def _rfc3339(created: float) -> str:
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


class JsonLines(JsonFormatter):
    """One JSON object a line, the schema in the module docstring (python-json-logger)."""

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        log_data["time"] = _rfc3339(record.created)
        log_data["level"] = record.levelname
        log_data["role"] = getattr(record, "role", None)
        log_data["logger"] = record.name
        log_data["message"] = record.message
        for name in ("request_id", "job_id", "trace_id"):
            value = getattr(record, name, None)
            if value is not None:
                log_data[name] = value
        if message_dict.get("exc_info"):
            log_data["exc_info"] = message_dict["exc_info"]
        if message_dict.get("stack_info"):
            log_data["stack_info"] = message_dict["stack_info"]


class Text(logging.Formatter):
    """`time level role logger [ids] message`, a traceback on the lines after it."""

    def __init__(self) -> None:
        super().__init__("%(levelname)s %(role)s %(name)s%(ids)s %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _rfc3339(record.created)

    def formatMessage(self, record: logging.LogRecord) -> str:
        ids = " ".join(
            f"{name}={value}"
            for name in ("request_id", "job_id", "trace_id")
            if (value := getattr(record, name, None)) is not None
        )
        record.ids = f" [{ids}]" if ids else ""
        return f"{self.formatTime(record)} {super().formatMessage(record)}"


class _Redacting(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler whose every formatted line goes through the redactor."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__(sys.stderr)
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        return self.redactor(super().format(record))


def _handler(role: str, settings: Settings) -> logging.Handler:
    handler = _Redacting(Redactor(secrets_of(settings)))
    json_lines = settings.log_format == "json"
    handler.setFormatter(JsonLines() if json_lines else Text())
    # JSON escapes a message's line breaks itself; text needs them escaped.
    handler.addFilter(_Context(role, escape=not json_lines))
    return handler


def uvicorn_handler() -> logging.Handler:
    """The root handler of `app/uvicorn_logging.json` (`uvicorn --log-config`, or the variable
    `UVICORN_LOG_CONFIG`): uvicorn's own lines in our format also in the process that never
    imports the app, the supervisor of `--workers N`. `app.main` replaces it in each child."""
    settings = get_settings()
    return _handler(settings.log_role or "api", settings)


_announced = False
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


def configure_logging(
    role: str, settings: Settings | None = None, level: int | str = "INFO", exclusive: bool = False
) -> None:
    """Our handler on the root logger, the loggers that had their own through it (see the
    module docstring); idempotent."""
    settings = settings or get_settings()
    role = settings.log_role or role
    handler = _handler(role, settings)
    root = logging.getLogger()
    for old in root.handlers[:]:
        # Ours from an earlier call; others' stay (pytest's), unless `exclusive` (alembic's).
        if exclusive or isinstance(old, _Redacting):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # uvicorn's loggers (and Celery's) bring handlers of their own: through the root's instead.
    # One with no handler that does not propagate was silenced on purpose (uvicorn's
    # `--no-access-log`, which runs before the app is imported) and stays silent.
    for name in (*UVICORN_LOGGERS, "celery", "celery.task", "celery.redirected"):
        logger = logging.getLogger(name)
        if not logger.handlers and not logger.propagate:
            continue
        for old in logger.handlers[:]:
            logger.removeHandler(old)
        logger.propagate = True
    # Where this process connects, its passwords masked like any other line's (`Redactor`);
    # once a process.
    global _announced
    if _announced:
        return
    _announced = True
    logging.getLogger(__name__).info(
        "%s: database %s, broker %s, result backend %s, log format %s",
        role,
        settings.database_url,
        settings.celery_broker_url,
        settings.celery_result_backend,
        settings.log_format,
    )


def role_of_command(argv: list[str]) -> str:
    """The Celery role a command line runs (`celery -A app.worker beat` is beat)."""
    for role in ("beat", "flower"):
        if role in argv[1:]:
            return role
    return "worker"


def install_celery_logging() -> None:
    """Celery's `setup_logging` signal: our configuration instead of Celery's (which would hijack
    the root logger and format task records with its own text), for the worker and beat."""
    from celery import signals

    def _setup(loglevel: int | str | None = None, **_: Any) -> None:
        configure_logging(role_of_command(sys.argv), level=loglevel or logging.INFO)

    signals.setup_logging.connect(_setup, weak=False)
    if _is_celery_command(sys.argv):
        # From the start, before Celery sets up logging: a warning it gives before that (running
        # as root) is a record too.
        configure_logging(role_of_command(sys.argv))
        logging.captureWarnings(True)
        if get_settings().log_format == "json":
            _celery_prints_as_records()


def _is_celery_command(argv: list[str]) -> bool:
    program = argv[0] if argv else ""
    return program.endswith(("/celery", "celery/__main__.py")) or program == "celery"


def _celery_prints_as_records() -> None:
    """JSON lines only: Celery prints its banners (worker, beat) and its shutdown notices to the
    terminal, not through logging; the banners go (their content is in the records that follow,
    `--loglevel=INFO`), the notices become records."""
    import functools

    from celery.apps import beat, worker

    def quiet(method: Any) -> Any:
        @functools.wraps(method)
        def quietly(self: Any, *args: Any, **kwargs: Any) -> Any:
            kwargs["quiet"] = True
            return method(self, *args, **kwargs)

        return quietly

    worker.Worker.on_before_init = quiet(worker.Worker.on_before_init)
    beat.Beat.__init__ = quiet(beat.Beat.__init__)

    def say(message: str, *_: Any) -> None:
        logging.getLogger(worker.__name__).warning("%s", message)

    worker.safe_say = say
