"""Prometheus metrics (docs/observability.md is the list, and the contract alert rules use).

prometheus_client's multiprocess mode when `PROMETHEUS_MULTIPROC_DIR` is set (the stack sets it
to a private tmpfs, empty at container start): every process of a container (uvicorn's workers,
Celery's pool) writes its values to files there and whichever process serves `/metrics` adds them
up. Unset (tests, a plain local run), each process keeps its own registry.

The metric objects live in `app.metrics.api` (the API's) and `app.metrics.worker` (the worker's),
so that a process only writes files for its own role's metrics.
"""

import contextlib
import os
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

MULTIPROC_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> Path | None:
    value = os.environ.get(MULTIPROC_DIR_VARIABLE) or os.environ.get(MULTIPROC_DIR_VARIABLE.lower())
    return Path(value) if value else None


def ensure_multiprocess_dir() -> None:
    """Create the directory if it is missing: prometheus_client opens its files there when the
    first value is made, and fails on a missing directory."""
    directory = multiprocess_dir()
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)


# Before any metric object below (or in app.metrics.api / app.metrics.worker) makes a value.
ensure_multiprocess_dir()


def process_collector() -> Collector:
    """What this container's processes recorded: the sum of every process's files in
    multiprocess mode, else this process's own registry."""
    if multiprocess_dir() is None:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


def mark_this_process_dead() -> None:
    """A process that ends: its live gauges (`livesum`) stop counting. Counters and histograms
    keep its values (they are totals)."""
    if multiprocess_dir() is not None:
        with contextlib.suppress(OSError):
            mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
