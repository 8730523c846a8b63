"""`python -m rehearsal check`: what a machine lacks is named with the command that provides it."""

from __future__ import annotations

import pytest

from rehearsal import check, engine
from rehearsal.__main__ import main


def test_a_silent_engine_is_named_with_the_command_that_starts_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(engine, "DOCKER_SOCKET", "/nonexistent/docker.sock")
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")

    assert main(["check", "--chromium"]) == 1

    said = capsys.readouterr().err
    assert "a Docker engine answering on unix:///nonexistent/docker.sock" in said
    assert check.ENGINE_COMMAND in said
    assert "chromium" in said
    assert check.CHROMIUM_COMMAND in said


def test_the_engine_is_the_provider_s_host_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    # As the provider resolves `host`: docker:host from the stack config, else DOCKER_HOST, else
    # the local socket.
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    assert engine.docker_host() == "unix:///var/run/docker.sock"
    monkeypatch.setenv("DOCKER_HOST", "tcp://10.0.0.1:2375")
    assert engine.docker_host() == "tcp://10.0.0.1:2375"
    assert engine.use_host({}) == "tcp://10.0.0.1:2375"
    assert engine.use_host({"docker:host": "tcp://10.0.0.2:2375"}) == "tcp://10.0.0.2:2375"
    assert engine.docker_host() == "tcp://10.0.0.2:2375"


def test_the_base_images_are_the_dockerfile_s_and_the_project_s_defaults() -> None:
    assert check.base_images() == [
        "python:3.13-slim",
        "postgres:17",
        "redis:8",
        "haproxy:3.0",
        "prom/prometheus:v2.53.3",
        "prom/alertmanager:v0.28.1",
        "quay.io/prometheuscommunity/postgres-exporter:v0.17.1",
        "oliver006/redis_exporter:v1.69.0",
    ]


def test_a_missing_base_image_is_named_with_the_command_that_builds_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(check, "base_images", lambda: ["taskstack-no-such-image:0"])

    missing = check.missing_prerequisites()

    assert [what for what, _ in missing] == [
        "the base image taskstack-no-such-image:0 on the engine (nothing is pulled)"
    ]
    assert missing[0][1].startswith(check.IMAGES_COMMAND)
