"""The docker target's migration: a one-shot container whose exit code gates every role after it,
and its run label, which reruns it after a failure (docs/infra.md, "A failed migration")."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import pulumi

from infra.spec import SecretKey, Service
from infra.targets.docker_secrets import container_command, container_env, secret_files

MIGRATION_GATE_LABEL = "com.taskstack.migration"
# The migration container's run label, `<key>:<token>` (docs/infra.md, "A failed migration"), and
# the stack output that remembers the one that passed.
MIGRATION_RUN_LABEL = "com.taskstack.migration.run"
MIGRATION_RUN_OUTPUT = "migrationRun"


class MigrationFailedError(pulumi.RunError):
    """The one-shot migration exited non-zero: nothing that needs the schema is deployed."""


def require_success(exit_code: int, logs: str | None) -> str:
    if exit_code != 0:
        raise MigrationFailedError(
            f"the migration (alembic upgrade head) exited with code {exit_code}; nothing that "
            f"needs the schema was deployed. Its output:\n{logs or '(no output)'}"
        )
    return "passed"


def migration_run_label(
    image: pulumi.Input[str],
    service: Service,
    secrets: Mapping[SecretKey, pulumi.Output[str]],
    previous: pulumi.Input[Any],
    token: str,
) -> pulumi.Output[str]:
    """`<key>:<token>`: `key` digests what the migration runs (image, command, environment, the
    content of its secret files: a changed credential runs it again; only the digest is shown);
    `previous` is the label of the last migration that passed (this stack's own `migrationRun`
    output). Same key: that label again, so an `up` after a successful one changes nothing. Another
    key (a new image or setting, or a run that failed since, which never records its label): a new
    token, so the container is replaced and the migration runs again, with no `--replace`."""
    files = secret_files(service, secrets)
    key = pulumi.Output.unsecret(
        pulumi.Output.all(image, *(content for _, content in files)).apply(
            lambda values: hashlib.sha256(
                json.dumps(
                    [
                        container_command(service),
                        container_env(service, 1),
                        [path for path, _ in files],
                        [str(v) for v in values],
                    ]
                ).encode()
            ).hexdigest()[:16]
        )
    )
    return pulumi.Output.all(key, previous).apply(
        lambda pair: (
            pair[1]
            if isinstance(pair[1], str) and pair[1].split(":", 1)[0] == pair[0]
            else f"{pair[0]}:{token}"
        )
    )


def own_previous_outputs() -> pulumi.StackReference:
    """This stack's outputs as the last `up` that finished left them (the engine reads the
    stack's checkpoint; a failed `up` registers no output that depends on a failed gate)."""
    name = f"{pulumi.get_organization()}/{pulumi.get_project()}/{pulumi.get_stack()}"
    return pulumi.StackReference("previous-outputs", name)
