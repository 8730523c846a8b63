"""Trace context (W3C `traceparent`) from a request to the task its job runs, and OpenTelemetry
spans when `OTLP_ENDPOINT` is set.

- The API (`RequestContext`, a pure ASGI middleware): each request gets a request id (its
  `X-Request-ID` header when that is a sane token, else a new one, returned in `X-Request-ID`) and
  a span, a child of the request's `traceparent` (or the root of a new trace), named after its
  route template (`POST /process/{item_id}`).
- The messages: `current_traceparent()`, the request's span as a `traceparent`, is recorded with
  each task message in the outbox row (`app/intake/outbox.py`), so the relay, in whatever process,
  publishes it too; it travels as the message header `traceparent` (`app/intake/broker.py`).
- The worker (`install_celery_hooks`): each task run gets a span, a child of its message's
  `traceparent`, and its logs the job id and trace id.

Without `OTLP_ENDPOINT` nothing is exported and no SDK span is made. The API then keeps only the
ids (the parent's trace id or a new one, a new span id) in a context variable, without
OpenTelemetry's context machinery: the trace id still reaches the messages and every log line, at
the cost of two random numbers a request on the hot path. The worker's spans are
`NonRecordingSpan`s carrying the ids.
"""

import logging
import os
import random
import re
from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import ContextVar
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from app.config import Settings, get_settings
from app.logs import job_id_var, request_id_var

logger = logging.getLogger(__name__)

SERVICE_PREFIX = "taskstack-"
PROPAGATOR = TraceContextTextMapPropagator()
# An incoming X-Request-ID kept as it is: a bounded token of a safe charset (a UUID, a proxy's id).
_SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:+/=-]{1,128}")
_TRACER_NAME = "app.tracing"
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
# Without an SDK, the request's (trace id, span id, flags), set by `RequestContext`.
_request_ids: ContextVar[tuple[int, int, int] | None] = ContextVar("trace_ids", default=None)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def setup_tracing(role: str, settings: Settings | None = None) -> None:
    """With `OTLP_ENDPOINT`: an SDK tracer provider exporting over OTLP/HTTP, service name
    `taskstack-<role>`. Without it: nothing (the API's no-op provider)."""
    settings = settings or get_settings()
    if not settings.otlp_endpoint or recording():
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(
        resource=Resource.create({"service.name": SERVICE_PREFIX + (settings.log_role or role)})
    )
    endpoint = settings.otlp_endpoint.rstrip("/")
    if not endpoint.endswith("/v1/traces"):
        endpoint += "/v1/traces"
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(provider)


def recording() -> bool:
    """Whether an SDK provider is installed (OTLP_ENDPOINT, or a test's)."""
    return isinstance(trace.get_tracer_provider(), TracerProvider)


def parent_context(traceparent: str | bytes | None) -> otel_context.Context | None:
    """The context a `traceparent` names; None when absent or malformed."""
    if not traceparent:
        return None
    if isinstance(traceparent, bytes):
        traceparent = traceparent.decode("latin-1")
    extracted = PROPAGATOR.extract({"traceparent": traceparent})
    if not trace.get_current_span(extracted).get_span_context().is_valid:
        return None
    return extracted


def start_span(name: str, parent: otel_context.Context | None, kind: SpanKind) -> Span:
    """A span, child of `parent` (else the root of a new trace): an SDK span when recording, else
    a non-recording one that only carries the ids."""
    if recording():
        return trace.get_tracer(_TRACER_NAME).start_span(
            name, context=parent or otel_context.Context(), kind=kind
        )
    if parent is not None:
        above = trace.get_current_span(parent).get_span_context()
        trace_id, flags = above.trace_id, above.trace_flags
    else:
        trace_id, flags = random.getrandbits(128) or 1, TraceFlags(TraceFlags.SAMPLED)
    span_context = SpanContext(trace_id, random.getrandbits(64) or 1, False, flags)
    return NonRecordingSpan(span_context)


def _ids_for(traceparent: bytes | None) -> tuple[int, int, int]:
    """A request's ids without an SDK: a child of a valid `traceparent`, else a new trace."""
    if traceparent:
        found = _TRACEPARENT.fullmatch(traceparent.decode("latin-1").strip())
        if found and int(found[1], 16) and int(found[2], 16):
            return int(found[1], 16), random.getrandbits(64) or 1, int(found[3], 16)
    return random.getrandbits(128) or 1, random.getrandbits(64) or 1, int(TraceFlags.SAMPLED)


def current_trace_id() -> str | None:
    ids = _request_ids.get()
    if ids is not None:
        return f"{ids[0]:032x}"
    span_context = trace.get_current_span().get_span_context()
    return f"{span_context.trace_id:032x}" if span_context.is_valid else None


def current_traceparent() -> str | None:
    """The running span as a `traceparent` header value (what a message carries)."""
    ids = _request_ids.get()
    if ids is not None:
        return f"00-{ids[0]:032x}-{ids[1]:016x}-{ids[2]:02x}"
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    return (
        f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-"
        f"{int(span_context.trace_flags):02x}"
    )


class RequestContext:
    """Request id, trace context and the request's span (see the module docstring). Pure ASGI:
    two header looks, a span, two contextvars."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming_id = traceparent = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming_id = value
            elif name == b"traceparent":
                traceparent = value
        if incoming_id is not None and _SANE_REQUEST_ID.fullmatch(incoming_id):
            request_id = incoming_id.decode("ascii")
        else:
            request_id = os.urandom(16).hex()
        id_header = (b"x-request-id", request_id.encode("ascii"))
        if not recording():
            await self._with_ids(scope, receive, send, request_id, id_header, traceparent)
            return
        span = start_span(scope["method"], parent_context(traceparent), SpanKind.SERVER)
        status_code = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        request_token = request_id_var.set(request_id)
        context_token = otel_context.attach(trace.set_span_in_context(span))
        try:
            await self.app(scope, receive, send_with_id)
        except BaseException as error:
            span.record_exception(error)
            status_code = status_code or 500
            raise
        finally:
            if span.is_recording():
                _end_request_span(span, scope, status_code)
            otel_context.detach(context_token)
            request_id_var.reset(request_token)

    async def _with_ids(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        request_id: str,
        id_header: tuple[bytes, bytes],
        traceparent: bytes | None,
    ) -> None:
        """The request without an SDK: its ids in context variables, no span."""

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        request_token = request_id_var.set(request_id)
        ids_token = _request_ids.set(_ids_for(traceparent))
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            _request_ids.reset(ids_token)
            request_id_var.reset(request_token)


def _end_request_span(span: Span, scope: Scope, status_code: int) -> None:
    route = scope.get("route")
    template = getattr(route, "path", None)
    if template:
        span.update_name(f"{scope['method']} {template}")
        span.set_attribute("http.route", template)
    span.set_attribute("http.request.method", scope["method"])
    span.set_attribute("http.response.status_code", status_code)
    if status_code >= 500:
        span.set_status(Status(StatusCode.ERROR))
    span.end()


# The worker side: one span per task run, between Celery's task_prerun and task_postrun (in the
# process, and the thread, that runs the task).
_running: dict[str, tuple[Span, object, object]] = {}


def message_traceparent(request: Any) -> str | None:
    """The `traceparent` header of the message a task runs (Celery copies a message's headers
    onto `task.request`)."""
    value = getattr(request, "traceparent", None)
    if value is None:
        value = (getattr(request, "headers", None) or {}).get("traceparent")
    return value if isinstance(value, str) else None


def _task_started(task_id: str, task: Any, **_: Any) -> None:
    parent = parent_context(message_traceparent(task.request))
    span = start_span(str(task.name), parent, SpanKind.CONSUMER)
    if span.is_recording():
        span.set_attribute("celery.task_id", task_id)
        span.set_attribute("celery.task_name", str(task.name))
    _running[task_id] = (
        span,
        otel_context.attach(trace.set_span_in_context(span)),
        job_id_var.set(task_id),
    )


def _task_ended(task_id: str, state: str | None = None, **_: Any) -> None:
    entry = _running.pop(task_id, None)
    if entry is None:
        return
    span, context_token, job_token = entry
    if span.is_recording():
        span.set_attribute("celery.state", str(state))
        if state == "FAILURE":
            span.set_status(Status(StatusCode.ERROR))
        span.end()
    otel_context.detach(context_token)  # type: ignore[arg-type]
    job_id_var.reset(job_token)  # type: ignore[arg-type]


def _flush(**_: Any) -> None:
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.force_flush(5_000)


def install_celery_hooks() -> None:
    """Spans and ids around each task run; the tracer provider of the worker or beat."""
    from celery import signals

    from app.logs import role_of_command

    def _init(**_: Any) -> None:
        import sys

        setup_tracing(role_of_command(sys.argv))

    signals.worker_init.connect(_init, weak=False)
    signals.beat_init.connect(_init, weak=False)
    signals.task_prerun.connect(_task_started, weak=False)
    signals.task_postrun.connect(_task_ended, weak=False)
    signals.worker_process_shutdown.connect(_flush, weak=False)
    signals.worker_shutdown.connect(_flush, weak=False)
