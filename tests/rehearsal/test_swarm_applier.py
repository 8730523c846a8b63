"""The swarm applier's rules, without an engine: inputs refused by name, ForceNew vs in-place, the
provider's slot counting, and the spec sent to the engine."""

from __future__ import annotations

from typing import Any

import pytest

from rehearsal.appliers.swarm import SERVICE_INPUTS, _tasks_by_slot, replacement_key, service_spec
from rehearsal.engine import STACK_LABEL, RehearsalError, refuse_unhandled

URN = "urn:pulumi:s::p::docker:index/service:Service::api"


def _inputs(**changes: Any) -> dict[str, Any]:
    inputs: dict[str, Any] = {
        "name": "api",
        "mode": {"replicated": {"replicas": 2}},
        "taskSpec": {
            "containerSpec": {
                "image": "sha256:abc",
                "env": {"B": "2", "A": "1"},
                "secrets": [{"secretId": "s1", "secretName": "db-url-1a2b3c4", "fileName": "db"}],
                "healthcheck": {"tests": ["CMD", "true"], "interval": "5s", "retries": 3},
            },
            "networksAdvanceds": [{"id": "net1", "aliases": ["api"]}],
        },
        "endpointSpec": {"mode": "dnsrr", "ports": [{"targetPort": 8000, "publishedPort": 18200}]},
    }
    inputs.update(changes)
    return inputs


def test_an_unhandled_input_is_refused_by_name() -> None:
    inputs = _inputs()
    inputs["taskSpec"]["containerSpec"]["privileges"] = {"seLinuxContext": {"disable": True}}
    with pytest.raises(RehearsalError, match=r"taskSpec\.containerSpec: input\(s\) privileges"):
        refuse_unhandled(URN, inputs, SERVICE_INPUTS)
    inputs = _inputs()
    inputs["taskSpec"]["containerSpec"]["healthcheck"]["startInterval"] = "1s"
    with pytest.raises(RehearsalError, match="healthcheck: input"):
        refuse_unhandled(URN, inputs, SERVICE_INPUTS)
    refuse_unhandled(URN, _inputs(), SERVICE_INPUTS)


def test_replicas_and_env_update_in_place_networks_replace() -> None:
    base = replacement_key(_inputs())
    assert replacement_key(_inputs(mode={"replicated": {"replicas": 4}})) == base
    changed_env = _inputs()
    changed_env["taskSpec"]["containerSpec"]["env"] = {"A": "9"}
    assert replacement_key(changed_env) == base
    changed_alias = _inputs()
    changed_alias["taskSpec"]["networksAdvanceds"] = [{"id": "net1", "aliases": ["web"]}]
    assert replacement_key(changed_alias) != base
    assert replacement_key(_inputs(name="api-2")) != base


def _task(slot: int, desired: str, state: str, node: str = "n1") -> dict[str, Any]:
    return {"Slot": slot, "DesiredState": desired, "Status": {"State": state}, "NodeID": node}


def test_slots_favour_the_lowest_desired_then_observed_state() -> None:
    tasks = [
        _task(1, "running", "running"),
        # start-first: the new task of slot 1 is still starting: the slot counts as not running.
        _task(1, "running", "starting"),
        _task(2, "shutdown", "running"),
        _task(2, "running", "running"),
        _task(3, "running", "running", node="gone"),
    ]
    by_slot = _tasks_by_slot(tasks, active_nodes={"n1"})
    assert by_slot[1]["Status"]["State"] == "starting"
    assert by_slot[2]["DesiredState"] == "running"
    assert 3 not in by_slot  # a task on a node that is down is not counted


def test_the_spec_sent_to_the_engine() -> None:
    spec = service_spec(_inputs(), "api", {STACK_LABEL: "s"})
    container = spec["task_template"]["ContainerSpec"]
    assert container["Env"] == ["A=1", "B=2"]
    (secret,) = container["Secrets"]
    # The schema's defaults for the file target: root-owned, 0444.
    assert secret["File"] == {"Name": "db", "UID": "0", "GID": "0", "Mode": 0o444}
    assert container["Healthcheck"]["Interval"] == 5_000_000_000
    (network,) = spec["task_template"]["Networks"]
    assert (network["Target"], network["Aliases"]) == ("net1", ["api"])
    assert spec["mode"] == {"replicated": {"Replicas": 2}}
    assert spec["endpoint_spec"]["Mode"] == "dnsrr"
    # Unset publish mode and protocol take the schema's defaults.
    assert spec["endpoint_spec"]["Ports"] == [
        {"Protocol": "tcp", "TargetPort": 8000, "PublishedPort": 18200, "PublishMode": "ingress"}
    ]
    assert spec["labels"][STACK_LABEL] == "s"
