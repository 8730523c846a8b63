"""The appliers handle exactly what the program registers (no engine needed).

The program runs under mocks for the dev and prod stacks on both targets and for the rehearsal's
swarm and swarm3 stacks. Every input of every resource it registers must be in its applier's table
(`rehearsal.appliers.dispatch.HANDLED_INPUTS`), or a rehearsal would refuse it; and every entry of
the tables must be registered by one of them, or it is an input the rehearsal applies for nobody.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from rehearsal.appliers.dispatch import HANDLED_INPUTS
from rehearsal.engine import RehearsalError, Schema, refuse_unhandled
from rehearsal.runner import Registration, run_program
from rehearsal.stack_config import load_stack_config
from rehearsal.tokens import CONTAINER
from tests.infra.pulumi_mocks import ProgramMocks

STACKS = [
    ("dev", []),
    ("prod", []),
    ("dev", ["target=swarm"]),
    ("prod", ["target=swarm", "backupRepository=repository-host"]),
    ("swarm", []),
    ("swarm3", []),
]


@pytest.fixture(scope="module")
def registrations(tmp_path_factory: pytest.TempPathFactory) -> list[Registration]:
    state_dir = tmp_path_factory.mktemp("state")
    registered: list[Registration] = []
    for stack, overrides in STACKS:
        config = load_stack_config(stack, overrides, state_dir=state_dir)
        run = run_program(
            config.values,
            stack=f"rehearsal-{stack}",
            mocks=ProgramMocks(),
            secret_keys=config.secret_keys,
            project=config.project,
            program_dir=config.program_dir,
        )
        registered += [r for r in run.registrations if r.custom]
    return registered


def _paths(schema: Schema, prefix: str = "") -> Iterator[str]:
    for key, inner in schema.items():
        yield prefix + key
        if inner is not None:
            yield from _paths(inner, f"{prefix}{key}.")


def _set_paths(given: Any, schema: Schema, prefix: str = "") -> Iterator[str]:
    """The paths of `schema` that `given` (an input block, or a list of blocks) sets."""
    for block in given if isinstance(given, list) else [given]:
        for key, value in block.items():
            if value is None:
                continue
            yield prefix + key
            inner = schema.get(key)
            if inner is not None:
                yield from _set_paths(value, inner, f"{prefix}{key}.")


def test_every_input_the_program_registers_is_handled(
    registrations: list[Registration],
) -> None:
    for registration in registrations:
        assert registration.type in HANDLED_INPUTS, registration.urn
        refuse_unhandled(registration.urn, registration.plain, HANDLED_INPUTS[registration.type])


def test_every_handled_input_is_one_the_program_registers(
    registrations: list[Registration],
) -> None:
    for resource_type, schema in HANDLED_INPUTS.items():
        registered = {
            path
            for registration in registrations
            if registration.type == resource_type
            for path in _set_paths(registration.plain, schema)
        }
        assert registered, f"the program registers no {resource_type}"
        assert set(_paths(schema)) - registered == set(), resource_type


def test_an_unhandled_input_is_refused_with_its_path() -> None:
    schema = HANDLED_INPUTS[CONTAINER]
    with pytest.raises(
        RehearsalError, match=r"u healthcheck: input\(s\) startInterval not applied"
    ):
        refuse_unhandled(
            "u", {"healthcheck": {"tests": ["CMD", "true"], "startInterval": "1s"}}, schema
        )
    mounts = [{"target": "/a", "type": "tmpfs"}, {"target": "/b", "bindOptions": {}}]
    with pytest.raises(RehearsalError, match=r"u mounts\[1\]: input\(s\) bindOptions not applied"):
        refuse_unhandled("u", {"mounts": mounts}, schema)
