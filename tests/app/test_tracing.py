"""Trace context across API -> Redis -> worker: the API in process (its spans in an
InMemorySpanExporter), a worker subprocess exporting its spans over OTLP/HTTP to a collector stub
in this test. The worker's span of a job is a child of the request's span, in the trace of the
request's `traceparent`, whether the fast path or the outbox relay published its message."""

import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import httpx
import pytest
import redis
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from app.config import get_settings
from app.intake import broker, outbox
from tests.app.environment import REDIS_HOST_URL, RUN_DIR, claim_empty_redis_db, stop_process
from tests.app.test_logs import free_port

API_SPANS = InMemorySpanExporter()
# Worker spans the collector stub received: (trace id, span id, parent span id, name, attributes).
WORKER_SPANS: list[tuple[str, str, str, str, dict[str, str]]] = []


class Collector(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(self.rfile.read(int(self.headers["Content-Length"])))
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attributes = {a.key: a.value.string_value for a in span.attributes}
                    WORKER_SPANS.append(
                        (
                            span.trace_id.hex(),
                            span.span_id.hex(),
                            span.parent_span_id.hex(),
                            span.name,
                            attributes,
                        )
                    )
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture(scope="module")
def traced_worker(database: str) -> Iterator[str]:
    """A worker on a Redis db of its own, exporting to the stub; the API's broker pointed at it."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(API_SPANS))
        trace.set_tracer_provider(provider)
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    redis_db = claim_empty_redis_db()
    broker_url = f"{REDIS_HOST_URL}/{redis_db}"
    heartbeat = RUN_DIR / "traced-worker-heartbeat"
    env = {
        **os.environ,
        "CELERY_BROKER_URL": broker_url,
        "CELERY_RESULT_BACKEND": broker_url,
        "WORKER_HEARTBEAT_PATH": str(heartbeat),
        "OTLP_ENDPOINT": f"http://127.0.0.1:{server.server_port}",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "LOG_FORMAT": "json",
    }
    log = RUN_DIR / "traced-worker.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "app.worker",
                "worker",
                "--concurrency=1",
                "--loglevel=INFO",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while not heartbeat.exists():
        assert process.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)
    settings = get_settings()
    saved = settings.celery_broker_url
    settings.celery_broker_url = broker_url
    try:
        yield broker_url
    finally:
        settings.celery_broker_url = saved
        stop_process(process)
        server.shutdown()
        client = redis.Redis.from_url(broker_url)
        client.flushdb()
        client.close()


async def worker_span(job_id: str) -> tuple[str, str, str, str, dict[str, str]]:
    deadline = time.monotonic() + 30
    while True:
        for span in WORKER_SPANS:
            if span[4].get("celery.task_id") == job_id:
                return span
        assert time.monotonic() < deadline, f"no worker span for {job_id}: {WORKER_SPANS}"
        await anyio.sleep(0.1)


def api_span(trace_id: str) -> ReadableSpan:
    spans = [s for s in API_SPANS.get_finished_spans() if f"{s.context.trace_id:032x}" == trace_id]
    (span,) = [s for s in spans if s.kind == SpanKind.SERVER]
    return span


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["fast", "relay"])
async def test_the_worker_span_is_a_child_of_the_request_span(
    traced_worker: str, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    # Its own loop's publisher, on the traced worker's Redis db.
    broker._publishers.clear()
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    if path == "relay":
        real_push = outbox.push

        async def refused(_: Any) -> None:
            raise ConnectionError("broker away")

        monkeypatch.setattr(outbox, "push", refused)
    response = await client.post(
        "/process/5", headers={"traceparent": f"00-{trace_id}-{parent_id}-01"}
    )
    assert response.status_code == 202
    job_id = response.json()["task_id"]
    request_span = api_span(trace_id)
    assert request_span.name == "POST /process/{item_id}"
    assert request_span.parent is not None
    assert f"{request_span.parent.span_id:016x}" == parent_id
    if path == "relay":
        box = outbox.get_outbox()
        deadline = time.monotonic() + 10
        while not box.failed:
            assert time.monotonic() < deadline
            await anyio.sleep(0.05)
        monkeypatch.setattr(outbox, "push", real_push)
        assert await box.relay_once() >= 1  # read back from the outbox row
    task_trace, _, task_parent, name, _ = await worker_span(job_id)
    assert name == "app.tasks.process_data"
    assert task_trace == trace_id
    assert task_parent == f"{request_span.context.span_id:016x}"


@pytest.mark.anyio
async def test_a_request_without_traceparent_starts_a_trace_the_job_continues(
    traced_worker: str, client: httpx.AsyncClient
) -> None:
    broker._publishers.clear()
    response = await client.post("/process/6", headers={"traceparent": "garbage"})
    assert response.status_code == 202
    task_trace, _, task_parent, _, _ = await worker_span(response.json()["task_id"])
    request_span = api_span(task_trace)  # the API's new trace
    assert request_span.parent is None
    assert task_parent == f"{request_span.context.span_id:016x}"
