"""The Docker engine the rehearsal applies to: client, labels, conversions the provider does."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

import docker
import docker.errors
import docker.types

from rehearsal.runner import REPO_ROOT

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


def docker_host() -> str:
    """The engine the rehearsal applies to (and the `docker` CLI of the image builds)."""
    return os.environ.get("DOCKER_HOST") or f"unix://{DOCKER_SOCKET}"


def use_host(config_values: Mapping[str, str]) -> str:
    """The provider's `host`: `docker:host` from the stack config, else DOCKER_HOST, else the local
    socket (terraform-provider-docker v4.5.0 provider.go, `schema.EnvDefaultFunc("DOCKER_HOST",
    ...)`), set for this process and its `docker build`s; the engine in use."""
    if config_values.get("docker:host"):
        os.environ["DOCKER_HOST"] = config_values["docker:host"]
    return docker_host()


def api_client(*, timeout: int = 300) -> docker.APIClient:
    # The low-level client maps one to one onto the Engine API calls the provider makes.
    return docker.APIClient(base_url=docker_host(), version="auto", timeout=timeout)


_GO_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_GO_UNIT_NANOSECONDS = {"ns": 1, "us": 10**3, "µs": 10**3, "ms": 10**6, "s": 10**9, "m": 6 * 10**10}
_GO_UNIT_NANOSECONDS["h"] = 60 * _GO_UNIT_NANOSECONDS["m"]


def go_duration_nanoseconds(text: str) -> int:
    """A Go duration ("10s", "1m30s", "500ms") in nanoseconds, as `time.ParseDuration` reads it
    (resource_docker_container_funcs.go L147-158); where the provider silently turns a bad value
    into 0, here it is an error."""
    if text == "0":
        return 0
    parts = _GO_DURATION_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise RehearsalError(f"not a Go duration: {text!r}")
    return int(sum(float(number) * _GO_UNIT_NANOSECONDS[unit] for number, unit in parts))


def healthcheck(check: Mapping[str, Any] | None) -> docker.types.Healthcheck | None:
    """A container's or a service's healthcheck as the provider sends it, durations parsed
    (resource_docker_container_funcs.go L140-160, resource_docker_service_structures.go
    L884-906)."""
    if not check:
        return None
    durations = {"interval": "interval", "timeout": "timeout", "start_period": "startPeriod"}
    return docker.types.Healthcheck(
        test=list(check["tests"]),
        retries=int(check.get("retries", 0)),
        **{
            key: go_duration_nanoseconds(str(check.get(wire) or "0"))
            for key, wire in durations.items()
        },
    )


def exists(inspect: Callable[[str], Any], resource_id: str) -> bool:
    """Whether the engine still has the object (`inspect` is e.g. `client.inspect_network`)."""
    try:
        inspect(resource_id)
    except docker.errors.NotFound:
        return False
    return True


def label_list_to_dict(labels: Any) -> dict[str, str]:
    """The provider's `labels` blocks (`[{label, value}]`) as a plain mapping."""
    return {str(item["label"]): str(item["value"]) for item in labels or []}


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


def retry_while_refused(call: Callable[[], object], refusal: str, *, within: float = 60) -> None:
    """`call` (a removal): NotFound means done; an APIError naming `refusal` is retried for
    `within` seconds, as the engine refuses while what uses the object is still going away."""
    deadline = time.monotonic() + within
    while True:
        try:
            with contextlib.suppress(docker.errors.NotFound):
                call()
            return
        except docker.errors.APIError as error:
            if refusal not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(1)


def autoname(resource_name: str) -> str:
    """pulumi-docker's auto-naming (provider/resources.go `prov.SetAutonaming(255, "-")`): the
    logical name plus a 7-character random suffix."""
    return f"{resource_name}-{secrets.token_hex(4)[:7]}"
