"""The read-back model, one test per provider behaviour (no engine needed).

Each test fails when its rule is removed from `rehearsal.readback.RULES`: it asserts what Read
writes for the rule's case and that the engine's diff against it sees the program's original value
as a change.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from rehearsal.readback import (
    PROVIDER,
    RULES,
    Observed,
    changed_properties,
    nano_decimal_string,
    property_digests,
    read_back,
    short_duration,
)
from rehearsal.tokens import CONTAINER, SERVICE

TESTED = {
    "container-go-durations",
    "container-cpus-decimal",
    "container-stopped",
    "container-image-id",
    "container-envs-set",
    "service-tmpfs-mode-perm",
    "service-short-durations",
    "service-env-map",
    "service-mounts-set",
}


def _service(**container_spec: Any) -> dict[str, Any]:
    return {"name": "s", "taskSpec": {"containerSpec": {"image": "sha256:abc", **container_spec}}}


def _diff(kind: str, sent: dict[str, Any], observed: Observed | None = None) -> list[str]:
    """What the next `up` sees when the program sends the same inputs again."""
    recorded = property_digests(read_back(kind, sent, observed))
    return changed_properties(kind, copy.deepcopy(sent), recorded)


def test_every_rule_cites_the_provider_and_has_a_test() -> None:
    assert {rule.name for rule in RULES} == TESTED
    for rule in RULES:
        assert ".go " in rule.source, rule.name
        assert rule.resource_type in (CONTAINER, SERVICE)
    assert PROVIDER.startswith("kreuzwerker/terraform-provider-docker v4.5.0")


# -- containers ------------------------------------------------------------------------------------


def test_container_healthcheck_durations_read_back_in_go_long_form() -> None:
    sent = {"healthcheck": {"tests": ["CMD", "true"], "interval": "10s", "startPeriod": "1m"}}
    state = read_back(CONTAINER, sent)
    assert state["healthcheck"]["startPeriod"] == "1m0s"
    assert state["healthcheck"]["interval"] == "10s"
    assert _diff(CONTAINER, sent) == ["healthcheck.startPeriod"]
    sent["healthcheck"]["startPeriod"] = "1m0s"  # what the program sends
    assert _diff(CONTAINER, sent) == []


@pytest.mark.parametrize(
    ("cpus", "read"), [("2", "2.0"), ("0.50", "0.5"), ("1.0", "1.0"), ("0.25", "0.25")]
)
def test_container_cpus_read_back_in_decimal_form(cpus: str, read: str) -> None:
    assert read_back(CONTAINER, {"cpus": cpus})["cpus"] == read
    assert _diff(CONTAINER, {"cpus": cpus}) == ([] if cpus == read else ["cpus"])


def test_nano_decimal_string_is_the_providers() -> None:
    # helpers.go nanoInt64ToDecimalString, including its quirks.
    assert nano_decimal_string(2_000_000_000) == "2.0"
    assert nano_decimal_string(1_500_000_000) == "1.5"
    assert nano_decimal_string(10_000_000_000) == "10."
    assert nano_decimal_string(50_000_000) == "0.1"


def test_a_stopped_container_keeps_its_exit_code_and_reads_must_run_false() -> None:
    stopped = Observed(running=False, exit_code=1)
    # A one-shot with must_run=False: no diff, and the failed exit code stays in the state.
    one_shot = {"mustRun": False, "attach": True}
    state = read_back(CONTAINER, one_shot, stopped)
    assert state["exitCode"] == 1
    assert state["mustRun"] is False
    assert _diff(CONTAINER, one_shot, stopped) == []
    # must_run left at its default (true): Read writes false, the next `up` updates (starts) it.
    assert read_back(CONTAINER, {"attach": True}, stopped)["mustRun"] is False
    assert _diff(CONTAINER, {"attach": True}, stopped) == ["mustRun"]
    assert "exitCode" not in read_back(CONTAINER, {"attach": True}, Observed(running=True))


def test_an_image_given_by_id_reads_back_as_the_containers_image_id() -> None:
    observed = Observed(image_id="sha256:" + "f" * 64)
    assert read_back(CONTAINER, {"image": "sha256:abc"}, observed)["image"] == observed.image_id
    assert _diff(CONTAINER, {"image": "sha256:abc"}, observed) == ["image"]
    # By name: Config.Image, as given.
    assert read_back(CONTAINER, {"image": "postgres:17"}, observed)["image"] == "postgres:17"
    same = {"image": observed.image_id}
    assert _diff(CONTAINER, same, observed) == []


def test_container_envs_are_a_set() -> None:
    state = read_back(CONTAINER, {"envs": ["B=2", "A=1"]})
    assert state["envs"] == ["A=1", "B=2"]
    recorded = property_digests(state)
    assert changed_properties(CONTAINER, {"envs": ["A=1", "B=2"]}, recorded) == []


def test_must_run_defaults_to_true() -> None:
    recorded = property_digests(read_back(CONTAINER, {}))
    assert changed_properties(CONTAINER, {"mustRun": True}, recorded) == []
    assert changed_properties(CONTAINER, {"mustRun": False}, recorded) == ["mustRun"]


# -- services --------------------------------------------------------------------------------------


def test_service_tmpfs_mode_loses_the_sticky_bit() -> None:
    sent = _service(
        mounts=[{"type": "tmpfs", "target": "/scratch", "tmpfsOptions": {"mode": 1023}}]
    )
    state = read_back(SERVICE, sent)
    assert state["taskSpec"]["containerSpec"]["mounts"][0]["tmpfsOptions"]["mode"] == 511
    assert _diff(SERVICE, sent) == ["taskSpec.containerSpec.mounts"]
    sent = _service(
        mounts=[{"type": "tmpfs", "target": "/scratch", "tmpfsOptions": {"sizeBytes": 1}}]
    )
    assert _diff(SERVICE, sent) == []


def test_service_durations_are_shortened() -> None:
    assert short_duration(60_000_000_000) == "1m"
    assert short_duration(3_600_000_000_000) == "1h"
    assert short_duration(90_000_000_000) == "1m30s"
    sent = _service(
        healthcheck={"tests": ["CMD", "true"], "interval": "5s", "startPeriod": "1m0s"},
        stopGracePeriod="5m0s",
    )
    sent["updateConfig"] = {"delay": "10s", "monitor": "1m0s"}
    state = read_back(SERVICE, sent)
    spec = state["taskSpec"]["containerSpec"]
    assert spec["healthcheck"]["startPeriod"] == "1m"
    assert spec["stopGracePeriod"] == "5m"
    assert state["updateConfig"]["monitor"] == "1m"
    assert _diff(SERVICE, sent) == [
        "taskSpec.containerSpec.healthcheck.startPeriod",
        "taskSpec.containerSpec.stopGracePeriod",
        "updateConfig.monitor",
    ]
    short = _service(
        healthcheck={"tests": ["CMD", "true"], "interval": "5s", "startPeriod": "1m"},
        stopGracePeriod="5m",
    )
    short["updateConfig"] = {"delay": "10s", "monitor": "1m"}
    assert _diff(SERVICE, short) == []


def test_service_env_reads_back_as_a_map() -> None:
    state = read_back(SERVICE, _service(env={"B": "2", "A": "1"}))
    assert list(state["taskSpec"]["containerSpec"]["env"]) == ["A", "B"]
    recorded = property_digests(state)
    assert changed_properties(SERVICE, _service(env={"A": "1", "B": "2"}), recorded) == []
    assert changed_properties(SERVICE, _service(env={"A": "1", "B": "3"}), recorded) == [
        "taskSpec.containerSpec.env.B"
    ]


def test_service_mounts_are_a_set() -> None:
    first = {"type": "volume", "target": "/a", "source": "a"}
    second = {"type": "volume", "target": "/b", "source": "b"}
    recorded = property_digests(read_back(SERVICE, _service(mounts=[second, first])))
    assert changed_properties(SERVICE, _service(mounts=[first, second]), recorded) == []
