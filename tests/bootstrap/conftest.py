"""Local stand-ins for the outside world: an HTTP server for release archives, a Docker engine that
only answers /_ping, a closed port, and a run of scripts/bootstrap.py as `make up` runs it."""

from __future__ import annotations

import functools
import http.server
import os
import socket
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts import bootstrap

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "bootstrap.py"


class Served:
    """A directory served over HTTP on 127.0.0.1, counting the requests."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.requests: list[str] = []
        served = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                served.requests.append(self.path)

        handler = functools.partial(Handler, directory=str(directory))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/releases/sdk"
        (directory / "releases" / "sdk").mkdir(parents=True, exist_ok=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    server = Served(tmp_path / "www")
    yield server
    server.close()


class PingHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.rfile.readline()
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK")


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[str]:
    """DOCKER_HOST of a stand-in engine that answers GET /_ping (and nothing else)."""
    path = tmp_path / "engine.sock"
    server = socketserver.ThreadingUnixStreamServer(str(path), PingHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"unix://{path}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def fake_uv(tmp_path: Path) -> Path:
    """A directory with a `uv` that reports the pinned version (no install attempted)."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    uv = bin_dir / "uv"
    uv.write_text(f"#!/bin/sh\necho 'uv {bootstrap.UV_VERSION}'\n")
    uv.chmod(0o755)
    return bin_dir


def run_bootstrap(
    *args: str, env: dict[str, str], python: str = sys.executable, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    full = {key: value for key, value in os.environ.items() if not key.startswith("PULUMI_")}
    full.update(env)
    return subprocess.run(
        [python, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env=full,
        timeout=timeout,
        check=False,
        cwd=ROOT,
    )
