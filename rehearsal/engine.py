"""The Docker engine the rehearsal applies to: client, labels, conversions the provider does."""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable, Mapping
from typing import Any

import docker
import docker.errors

from rehearsal.project import REPO_ROOT

DOCKER_SOCKET = "/var/run/docker.sock"
# The engine's own client: the `docker` first on PATH may be a newer CLI that wants buildx.
DOCKER_CLI = "/usr/bin/docker"

# Labels the rehearsal adds to everything it creates, on top of the program's own. They name the
# tool, not the project (as Compose's `com.docker.compose.project` does).
STACK_LABEL = "rehearsal.stack"
URN_LABEL = "rehearsal.urn"
SEQUENCE_LABEL = "rehearsal.sequence"

STATE_DIR = REPO_ROOT / ".pulumi-state" / "rehearsal"


class RehearsalError(Exception):
    """A registration the rehearsal cannot apply, or that failed as the provider would fail it."""


# The provider's `host` setting, as its schema resolves it: `docker:host` from the stack config,
# else the DOCKER_HOST environment variable, else the local socket
# (kreuzwerker/terraform-provider-docker v4.5.0 internal/provider/provider.go, `host` with
# `DefaultFunc: schema.EnvDefaultFunc("DOCKER_HOST", "unix:///var/run/docker.sock")`).
HOST_CONFIG_KEY = "docker:host"
HOST_VARIABLE = "DOCKER_HOST"


def docker_host() -> str:
    """The engine the rehearsal applies to: DOCKER_HOST (which `use_host` sets from `docker:host`),
    else the local socket. The docker CLI the image builds run reads the same variable."""
    return os.environ.get(HOST_VARIABLE) or f"unix://{DOCKER_SOCKET}"


def use_host(config_values: Mapping[str, str]) -> str:
    """Apply the stack's `docker:host` (when set) for this process and its `docker build`s, as the
    provider takes it over DOCKER_HOST; returns the engine in use."""
    host = config_values.get(HOST_CONFIG_KEY)
    if host:
        os.environ[HOST_VARIABLE] = host
    return docker_host()


def api_client(*, timeout: int = 300) -> docker.APIClient:
    # The low-level client maps one to one onto the Engine API calls the provider makes.
    return docker.APIClient(base_url=docker_host(), version="auto", timeout=timeout)


_GO_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_GO_UNIT_NANOSECONDS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}


def go_duration_nanoseconds(text: str) -> int:
    """Parse a Go duration ("10s", "1m30s", "500ms") as `time.ParseDuration` does, in nanoseconds.

    The provider parses healthcheck durations with `time.ParseDuration`
    (resource_docker_container_funcs.go L147-158 at v4.5.0) and silently turns a bad value into 0;
    here a bad value is an error instead.
    """
    if text == "0":
        return 0
    parts = _GO_DURATION_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise RehearsalError(f"not a Go duration: {text!r}")
    return int(sum(float(number) * _GO_UNIT_NANOSECONDS[unit] for number, unit in parts))


def exists(inspect: Callable[[str], Any], resource_id: str) -> bool:
    """Whether the engine still has the object (`inspect` is e.g. `client.inspect_network`)."""
    try:
        inspect(resource_id)
    except docker.errors.NotFound:
        return False
    return True


def label_list_to_dict(labels: Any) -> dict[str, str]:
    """The provider's `labels` blocks (`[{label, value}]`) as a plain mapping."""
    if not labels:
        return {}
    return {str(item["label"]): str(item["value"]) for item in labels}


# What an applier handles of a resource's inputs: wire name -> None for a value (a string, a number,
# a list of them, or a map whose keys are data: envs, log options), or the schema of a block (a list
# of blocks is checked block by block).
Schema = Mapping[str, "Schema | None"]


def fields(values: str = "", **blocks: Schema) -> dict[str, Schema | None]:
    """A schema: `values` (space-separated wire names) hold values, `blocks` nested schemas."""
    return {**dict.fromkeys(values.split()), **blocks}


LABELS = fields("label value")


def refuse_unhandled(urn: str, given: Any, schema: Schema, path: str = "") -> None:
    """Every input the program sets is applied or refused with an error naming it, so a
    healthcheck or a read-only flag cannot vanish from the rehearsal unnoticed."""
    for index, block in enumerate(given if isinstance(given, list) else [given]):
        at = f"{path}[{index}]" if isinstance(given, list) else path
        where = f"{urn} {at}" if at else urn
        if not isinstance(block, Mapping):
            raise RehearsalError(f"{where}: a block was expected, not {block!r}")
        unknown = sorted(set(block) - set(schema))
        if unknown:
            raise RehearsalError(
                f"{where}: input(s) {', '.join(unknown)} not applied by the rehearsal "
                "(add them to rehearsal/appliers/, following the provider's semantics)"
            )
        for key, inner in schema.items():
            if inner is not None and block.get(key) is not None:
                refuse_unhandled(urn, block[key], inner, f"{at}.{key}" if at else key)


def autoname(resource_name: str) -> str:
    """pulumi-docker's auto-naming (provider/resources.go `prov.SetAutonaming(255, "-")`): the
    logical name plus a 7-character random suffix."""
    return f"{resource_name}-{secrets.token_hex(4)[:7]}"


def rehearsal_labels(own: Mapping[str, str], stack: str, urn: str, sequence: int) -> dict[str, str]:
    """The program's labels plus the rehearsal's own (stack, URN, creation order)."""
    return {**own, STACK_LABEL: stack, URN_LABEL: urn, SEQUENCE_LABEL: str(sequence)}
