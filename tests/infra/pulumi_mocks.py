"""Mocks that answer like the docker provider, for the program run by the rehearsal's runner.

The runner (`rehearsal.runner.run_program`) and its recording monitor are shared with the rehearsal;
here `ProgramMocks` answers each registration as the provider would after a successful create,
without touching an engine, and `run_program` takes config keys without the project prefix.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from pulumi.runtime import mocks as pulumi_mocks

from infra.config import PROJECT
from rehearsal import runner
from rehearsal.runner import (
    REPO_ROOT,
    ProgramRun,
    Registration,
    container_env,
    container_label,
    is_secret,
    reveal,
    without_secrets,
)
from rehearsal.tokens import (
    CONTAINER,
    IMAGE,
    NETWORK,
    REMOTE_IMAGE,
    SECRET,
    SERVICE,
    STACK_REFERENCE,
    VOLUME,
)

__all__ = [
    "CONTAINER",
    "IMAGE",
    "NETWORK",
    "PROJECT",
    "REMOTE_IMAGE",
    "REPO_ROOT",
    "SECRET",
    "SERVICE",
    "VOLUME",
    "ProgramMocks",
    "ProgramRun",
    "Registration",
    "container_env",
    "container_label",
    "is_secret",
    "reveal",
    "run_program",
    "without_secrets",
]

# The suffix Pulumi's auto-naming would add (random per resource; fixed here so runs compare).
AUTONAME_SUFFIX = "-a1b2c3d"


class ProgramMocks(pulumi_mocks.Mocks):
    """Answers like the docker provider after a successful create: inputs plus computed outputs.

    `migration_exit_code` and `migration_logs` are what the one-shot migrate container reports.
    """

    def __init__(
        self,
        migration_exit_code: int = 0,
        migration_logs: str = "",
        stack_outputs: Mapping[str, Any] | None = None,
    ) -> None:
        self.migration_exit_code = migration_exit_code
        # What a StackReference to the stack itself reads: the outputs of its last `up`.
        self.stack_outputs = dict(stack_outputs or {})
        self.migration_logs = migration_logs or (
            "INFO  [alembic.runtime.migration] Running upgrade  -> 0001, create jobs\n"
        )

    def new_resource(self, args: pulumi_mocks.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        state = dict(args.inputs)
        if args.typ == STACK_REFERENCE:
            return str(args.resource_id), {**state, "outputs": dict(self.stack_outputs)}
        if args.typ in (SECRET, CONTAINER) and "name" not in state:
            # The provider auto-names secrets, and containers given no name (API, workers).
            state["name"] = f"{args.name}{AUTONAME_SUFFIX}"
        name = str(reveal(state.get("name", args.name)))
        if args.typ == CONTAINER:
            state |= {"exitCode": 0, "containerLogs": ""}
            if state.get("attach"):
                state |= {
                    "exitCode": self.migration_exit_code,
                    "containerLogs": self.migration_logs,
                }
        elif args.typ == IMAGE:
            state |= {
                "repoDigest": "sha256:" + "a" * 64,
                "baseImageName": state.get("imageName", ""),
            }
        elif args.typ == REMOTE_IMAGE:
            # Derived from the name, the same in every process (so runs can be compared).
            digest = hashlib.sha256(name.encode()).hexdigest()
            state |= {"imageId": f"sha256:{digest}", "repoDigest": ""}
        return f"{name}-id", state

    def call(
        self, args: pulumi_mocks.MockCallArgs
    ) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        return {}, None


def run_program(
    config: Mapping[str, Any],
    *,
    stack: str,
    secrets: Mapping[str, str] | None = None,
    mocks: pulumi_mocks.Mocks | None = None,
) -> ProgramRun:
    """Run `infra/` for `stack` with `config` and `secrets` (keys without `taskstack:`), under
    `mocks` (default `ProgramMocks()`).

    Raises what the program raises (a configuration error, a failed migration gate).
    """
    values = {f"{PROJECT}:{k}": str(v) for k, v in config.items()}
    values |= {f"{PROJECT}:{k}": v for k, v in (secrets or {}).items()}
    return runner.run_program(
        values,
        stack=stack,
        mocks=mocks or ProgramMocks(),
        secret_keys=[f"{PROJECT}:{k}" for k in (secrets or {})],
    )
