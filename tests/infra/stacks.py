"""The repository's stacks under mocks: their test credentials and stack files, checks on a run."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from tests.infra.pulumi_mocks import (
    PROJECT,
    REPO_ROOT,
    SECRET,
    SERVICE,
    ProgramMocks,
    ProgramRun,
    Registration,
    run_program,
    without_secrets,
)

# Test credentials, set as secrets like `pulumi config set --secret` does. Distinctive strings, so
# that a leak anywhere in the registered inputs or outputs is found by a plain substring search.
PROD_SECRETS: Mapping[str, str] = {
    "postgresPassword": "pg-Secret-4c0ffee-5ea1ed",
    "redisPassword": "redis-Secret-8badf00d-42",
    "flowerBasicAuth": "admin:flower-Secret-deadbeef",
}
# Where Alertmanager posts alerts: optional, a secret all the same.
WEBHOOK_SECRETS: Mapping[str, str] = {"alertWebhookUrl": "https://hooks.example/Secret-feedface"}
API_KEY_SECRETS: Mapping[str, str] = {"initialApiKey": "tsk_" + "Initial-Key-Feedface" * 2 + "xyz"}
# The proxy's certificate and key: only their shape is checked by the program.
TLS_SECRETS: Mapping[str, str] = {
    "tlsCertificate": "-----BEGIN CERTIFICATE-----\ncert-Secret-0ddba11\n-----END CERTIFICATE-----",
    "tlsKey": "-----BEGIN PRIVATE KEY-----\nkey-Secret-c0ffee99\n-----END PRIVATE KEY-----",
}


def stack_file_config(stack: str) -> dict[str, Any]:
    """The `taskstack:*` settings of Pulumi.<stack>.yaml, keys without the project prefix."""
    document = yaml.safe_load(Path(REPO_ROOT / f"Pulumi.{stack}.yaml").read_text())
    prefix = f"{PROJECT}:"
    return {k.removeprefix(prefix): v for k, v in (document.get("config") or {}).items()}


def run_stack(stack: str, *, mocks: ProgramMocks | None = None, **overrides: Any) -> ProgramRun:
    secrets = PROD_SECRETS if stack == "prod" else None
    return run_program(
        {**stack_file_config(stack), **overrides}, stack=stack, secrets=secrets, mocks=mocks
    )


def assert_only_secret(run: ProgramRun, secret: str) -> str:
    """The credential `secret` appears in no plain input, output or stack output; its plaintext."""
    plaintext = PROD_SECRETS[secret].split(":")[-1]
    for resource in run.registrations:
        for label, value in (("inputs", resource.inputs), ("outputs", resource.outputs)):
            visible = json.dumps(without_secrets(value))
            assert plaintext not in visible, f"{secret} in plain {label} of {resource.name}"
    assert plaintext not in json.dumps(without_secrets(run.stack_outputs))
    return plaintext


def assert_second_run_identical(run: Callable[[ProgramMocks], ProgramRun]) -> None:
    """Two runs register the same inputs and dependencies: a second `pulumi up` changes nothing.

    The second run reads the first one's stack outputs (a StackReference to the stack itself, as
    the engine answers it). Registration order is asynchronous, so they are compared by URN.
    """
    first = run(ProgramMocks())
    second = run(ProgramMocks(stack_outputs=without_secrets(first.stack_outputs)))
    assert {r.urn: r.inputs for r in first.registrations} == {
        r.urn: r.inputs for r in second.registrations
    }
    assert {r.urn: r.dependencies for r in first.registrations} == {
        r.urn: r.dependencies for r in second.registrations
    }


# --- The swarm target -----------------------------------------------------------------------------


def swarm(stack: str, **overrides: Any) -> ProgramRun:
    if stack == "prod":
        # A prod swarm stack keeps its repository on a repository host (docs/backup.md).
        overrides.setdefault("backupRepository", "repository-host")
    return run_stack(stack, target="swarm", **overrides)


def service(run: ProgramRun, role: str) -> dict[str, Any]:
    return run.named(role, SERVICE).plain


def container_spec(run: ProgramRun, role: str) -> dict[str, Any]:
    return service(run, role)["taskSpec"]["containerSpec"]  # type: ignore[no-any-return]


def secrets_by_id(run: ProgramRun) -> dict[str, Registration]:
    return {r.id: r for r in run.of_type(SECRET)}


def secret_value(secret: Registration) -> str:
    return base64.b64decode(secret.plain["data"]).decode()


def mounted_files(run: ProgramRun, role: str) -> dict[str, str]:
    """File name under /run/secrets -> the value of the Swarm secret mounted there."""
    by_id = secrets_by_id(run)
    return {
        mount["fileName"]: secret_value(by_id[mount["secretId"]])
        for mount in container_spec(run, role).get("secrets", [])
    }


def is_secrets_container(container: Registration) -> bool:
    """A docker-target secrets container (infra/targets/docker_secrets.py): created, never run."""
    return container.plain.get("start") is False


def role_containers(run: ProgramRun) -> list[Registration]:
    """The containers that run a role (every container but the secrets containers)."""
    return [c for c in run.containers() if not is_secrets_container(c)]


def secrets_container_of(run: ProgramRun, container: Registration) -> Registration | None:
    """The secrets container whose volume `container` mounts (`volumes_from`), if any."""
    sources = [v["fromContainer"] for v in container.plain.get("volumes", [])]
    if not sources:
        return None
    (source,) = sources
    container_id, _, mode = str(source).partition(":")
    assert mode == "ro", container.name
    (found,) = [c for c in run.containers() if c.id == container_id]
    return found


def uploaded_files(run: ProgramRun, container: Registration) -> dict[str, str]:
    """Path -> content of each file uploaded for `container` (into its secrets container)."""
    secrets = secrets_container_of(run, container)
    if secrets is None:
        return {}
    return {u["file"]: u["content"] for u in secrets.plain.get("uploads", [])}
