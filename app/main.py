"""The FastAPI application (`uvicorn app.main:app`)."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from app.api import strict_json
from app.api.admission import AdmissionLimit
from app.api.auth import Authentication
from app.api.deps import get_broker_client
from app.api.finished_jobs import FinishedTaskFastPath
from app.api.routes import health, job_list, metrics, notifications, process_item, task_status
from app.config import MAX_REQUEST_BODY_BYTES, Settings, get_settings
from app.intake.broker import close_publisher
from app.intake.outbox import get_outbox, run_relay
from app.logs import configure_logging
from app.metrics import mark_this_process_dead
from app.metrics.api import HttpMetrics
from app.storage import pg
from app.storage.db import alembic_head, get_async_engine
from app.tracing import RequestContext, setup_tracing

# Logs and traces of this process (app/logs.py, app/tracing.py): at import, after uvicorn set up its
# loggers, so in each `--workers` child too.
configure_logging("api")
setup_tracing("api")


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    # Fail at start, not on the first request, for bad settings or missing migrations.
    get_settings()
    alembic_head()
    stopping = asyncio.Event()
    relay = asyncio.create_task(run_relay(stopping))
    yield
    # The relay ends after its current pass (bounded), never in the middle of one.
    stopping.set()
    # Past the bound, wait_for cancels it: what it had not finished, another process's relay does.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(relay, get_settings().readiness_timeout_seconds)
    # Messages committed but not pushed yet: out now rather than by another process's relay.
    await get_outbox().finish_publishing(get_settings().readiness_timeout_seconds)
    await get_broker_client().aclose()
    get_broker_client.cache_clear()
    await close_publisher()
    await pg.close_pool()
    await get_async_engine().dispose()
    mark_this_process_dead()


def create_app(settings: Settings) -> FastAPI:
    """The app as `settings` configure it (tests make apps with other settings)."""
    docs = settings.api_docs
    application = FastAPI(
        title="taskstack",
        summary="Accepts jobs, queues them on Celery and reports their state from PostgreSQL.",
        version="0.1.0",
        lifespan=lifespan,
        max_body_size=MAX_REQUEST_BODY_BYTES,
        # Off: 404, as for any path that does not exist.
        openapi_url="/openapi.json" if docs else None,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        # The request's span is app/tracing.py's (also without the SDK): not FastAPI's own as
        # well. Its metrics and logs hooks too: with OpenTelemetry installed, FastAPI would
        # otherwise look its providers up on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    for module in (process_item, task_status, job_list, notifications, health, metrics):
        application.include_router(module.router)
    # A request over the process's bound is refused before routing (app/api/admission.py)...
    application.add_middleware(
        AdmissionLimit,
        max_requests=settings.max_concurrent_requests,
        max_job_lists=settings.max_concurrent_job_lists,
    )
    # ...except a finished job's cached GET /task answer: it awaits nothing and holds no
    # connection or page, so it needs no bound, and skips the limit's cost (measured:
    # RELIABILITY.md)...
    application.add_middleware(FinishedTaskFastPath)
    # ...which answers the request's client only: whose it is, and its limits, are decided first
    # (app/api/auth.py); with AUTH_REQUIRED off every request is the anonymous client's.
    if settings.auth_required:
        application.add_middleware(Authentication)
    # Every answer gets its X-Request-ID, every request its span (app/tracing.py)...
    application.add_middleware(RequestContext)
    # ...and, outermost, is counted and timed, everything above included (app/metrics/api.py).
    application.add_middleware(HttpMetrics)
    application.add_exception_handler(RequestValidationError, strict_json.validation_error)
    for error in (OperationalError, InterfaceError, PoolTimeoutError, pg.DatabaseUnavailable):
        application.add_exception_handler(error, database_unavailable)
    return application


async def database_unavailable(_: Request, error: Exception) -> JSONResponse:
    """PostgreSQL down or restarting, or no pooled connection free within the pool's wait
    (`READINESS_TIMEOUT_SECONDS`): a 503 the client may retry (no job was accepted), not 500."""
    cause = error.__cause__ if isinstance(error, pg.DatabaseUnavailable) else error
    return JSONResponse(
        {"detail": f"database unavailable: {type(cause).__name__}"},
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": "1"},
    )


app = create_app(get_settings())
