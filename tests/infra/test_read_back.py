"""What the program sends is what the provider reads back (docs/infra.md, "Provider behaviour"):
a second `pulumi up` diffs the new inputs against the read-back state and finds nothing.

The read-back model is the rehearsal's (`rehearsal/readback.py`, one rule per provider behaviour,
each tested in tests/rehearsal/test_readback.py); here it is applied to every container and service
the program registers for dev, prod and swarm, under mocks (no engine).
"""

from __future__ import annotations

from typing import Any

import pytest

from infra.config import provider_cpus
from infra.targets.docker_migration import MIGRATION_RUN_LABEL
from rehearsal.readback import Observed, changed_properties, property_digests, read_back
from rehearsal.runner import ProgramRun
from rehearsal.tokens import CONTAINER, SERVICE
from tests.infra.pulumi_mocks import ProgramMocks, without_secrets
from tests.infra.stacks import run_stack


def _observed(typ: str, inputs: dict[str, Any]) -> Observed:
    if typ == CONTAINER and inputs.get("attach"):
        # The one-shot has exited when Read runs after its create.
        return Observed(running=False, exit_code=0, image_id=str(inputs["image"]))
    return Observed(running=True, image_id=str(inputs.get("image", "")))


def _diffs(run: ProgramRun) -> dict[str, list[str]]:
    diffs = {}
    for registration in run.registrations:
        if registration.type not in (CONTAINER, SERVICE):
            continue
        inputs = registration.plain
        state = read_back(registration.type, inputs, _observed(registration.type, inputs))
        changed = changed_properties(registration.type, inputs, property_digests(state))
        if changed:
            diffs[registration.name] = changed
    return diffs


HOSTED = {"backupRepository": "repository-host"}


@pytest.mark.parametrize(
    ("stack", "target", "overrides"),
    [
        ("dev", "docker", {}),
        ("prod", "docker", {}),
        ("prod", "docker", HOSTED),
        ("dev", "swarm", {}),
        ("prod", "swarm", HOSTED),
    ],
)
def test_nothing_the_program_sends_is_read_back_differently(
    stack: str, target: str, overrides: dict[str, Any]
) -> None:
    run = run_stack(stack, target=target, **overrides)
    assert any(r.type in (CONTAINER, SERVICE) for r in run.registrations)
    assert _diffs(run) == {}


def test_a_user_cpus_value_is_normalised_to_the_read_back_form() -> None:
    assert provider_cpus("2") == "2.0"
    assert provider_cpus("0.50") == "0.5"
    run = run_stack("prod", apiCpus="2", workerCpus="0.50")
    cpus = {r.name: r.plain.get("cpus") for r in run.registrations if r.type == CONTAINER}
    assert cpus["api-1"] == "2.0"
    assert cpus["worker-1"] == "0.5"
    assert _diffs(run) == {}


def test_a_cpus_value_the_provider_reads_back_as_another_is_refused() -> None:
    with pytest.raises(Exception, match=r"reads 0\.05 back as 0\.1"):
        run_stack("prod", apiCpus="0.05")


def _run_label(run: ProgramRun) -> str:
    (migrate,) = [r for r in run.registrations if r.type == CONTAINER and r.name == "migrate"]
    labels = {item["label"]: item["value"] for item in migrate.plain["labels"]}
    return str(labels[MIGRATION_RUN_LABEL])


def test_the_migration_run_label_is_kept_after_a_migration_that_passed() -> None:
    first = run_stack("dev")
    label = _run_label(first)
    assert first.exports["migrationRun"] == label
    # The next `up` reads this stack's outputs: same label, so the migration is not run again.
    again = run_stack("dev", mocks=ProgramMocks(stack_outputs=without_secrets(first.stack_outputs)))
    assert _run_label(again) == label


def test_the_migration_runs_again_after_one_that_failed() -> None:
    # A failed `up` never records its label (the output waits for the gate), so the last output
    # is an older key's: a new token, so a new container, so the migration runs again.
    previous = run_stack("dev")
    stale = {"migrationRun": "0123456789abcdef:00000000"}
    retry = run_stack("dev", mocks=ProgramMocks(stack_outputs=stale))
    assert _run_label(retry).split(":")[0] == _run_label(previous).split(":")[0]
    assert _run_label(retry) not in (stale["migrationRun"], _run_label(previous))
