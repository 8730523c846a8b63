"""The swarm a stack's services run on: the engine the provider talks to (`docker:host`, else
DOCKER_HOST, else this machine's, which is made a single-node swarm before the program's first
Swarm object is applied, and left after `down` only when the rehearsal created it).

What the rehearsal did to the engine is kept in `.pulumi-state/rehearsal/<stack>.swarm.json`:
whether it ran `docker swarm init`, and which node labels it added (the stack's node labels, as an
operator labels the nodes of a cluster). `down` undoes exactly that.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors

from rehearsal.engine import STATE_DIR, RehearsalError, api_client

# One node: the control plane listens on loopback only, and advertises that address.
ADVERTISE_ADDRESS = "127.0.0.1"
LISTEN_ADDRESS = "127.0.0.1:2377"


@dataclass
class SwarmRecord:
    initialised: bool = False
    node_id: str = ""
    added_labels: dict[str, str] = field(default_factory=dict)


def _record_path(stack: str, state_dir: Path) -> Path:
    return state_dir / f"{stack}.swarm.json"


def _load(stack: str, state_dir: Path) -> SwarmRecord | None:
    path = _record_path(stack, state_dir)
    return SwarmRecord(**json.loads(path.read_text())) if path.exists() else None


def _save(stack: str, record: SwarmRecord, state_dir: Path) -> None:
    path = _record_path(stack, state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(asdict(record), indent=2, sort_keys=True))
    os.replace(temporary, path)


def swarm_state(client: docker.APIClient) -> dict[str, Any]:
    return dict(client.info().get("Swarm") or {})


def ensure_swarm(
    stack: str,
    labels: dict[str, str],
    *,
    log: Callable[[str], None] = print,
    state_dir: Path = STATE_DIR,
) -> SwarmRecord:
    """Make the engine a swarm manager (`docker swarm init --advertise-addr 127.0.0.1` unless it
    already is one) and put on its node each of `labels` that no node of the swarm carries yet, as
    `docker node update --label-add` would."""
    client = api_client()
    record = _load(stack, state_dir) or SwarmRecord()
    swarm = swarm_state(client)
    if swarm.get("LocalNodeState") != "active":
        client.init_swarm(advertise_addr=ADVERTISE_ADDRESS, listen_addr=LISTEN_ADDRESS)
        record.initialised = True
        log(f"  swarm initialised (advertise {ADVERTISE_ADDRESS})")
        swarm = swarm_state(client)
    elif not swarm.get("ControlAvailable"):
        raise RehearsalError(
            "this engine is a swarm worker: the provider must talk to a manager "
            "(docker swarm leave, or run the rehearsal on a manager)"
        )
    node_id = str(swarm["NodeID"])
    record.node_id = node_id
    node = client.inspect_node(node_id)
    spec = node["Spec"]
    current = dict(spec.get("Labels") or {})
    # A label some node already carries (an operator placed PostgreSQL or Redis on a node of a
    # multi-node swarm) is left where it is; only a label no node has goes on this one.
    carried = {
        (key, value)
        for other in client.nodes()
        for key, value in (other["Spec"].get("Labels") or {}).items()
    }
    missing = {
        key: value
        for key, value in labels.items()
        if current.get(key) != value and (key, value) not in carried
    }
    if missing:
        for key, value in missing.items():
            if key not in current:
                record.added_labels[key] = value
        spec["Labels"] = {**current, **missing}
        client.update_node(node_id, node["Version"]["Index"], spec)
        log(f"  node {node['Description']['Hostname']} labelled {sorted(missing)}")
    _save(stack, record, state_dir)
    return record


def release_swarm(
    stack: str,
    *,
    log: Callable[[str], None] = print,
    state_dir: Path = STATE_DIR,
) -> None:
    """Undo `ensure_swarm` for `stack`: leave the swarm if the rehearsal created it and nothing else
    runs on it, else remove the node labels it added."""
    record = _load(stack, state_dir)
    if record is None:
        return
    client = api_client()
    swarm = swarm_state(client)
    if swarm.get("LocalNodeState") == "active" and swarm.get("ControlAvailable"):
        others = [s["Spec"]["Name"] for s in client.services()]
        if record.initialised and not others:
            client.leave_swarm(force=True)
            log("  left the swarm (the rehearsal had initialised it)")
        else:
            if record.initialised:
                log(f"  swarm kept: other services run on it ({', '.join(sorted(others))})")
            _remove_labels(client, record)
    _record_path(stack, state_dir).unlink(missing_ok=True)


def _remove_labels(client: docker.APIClient, record: SwarmRecord) -> None:
    try:
        node = client.inspect_node(record.node_id)
    except docker.errors.NotFound:
        return
    spec = node["Spec"]
    labels = dict(spec.get("Labels") or {})
    for key, value in record.added_labels.items():
        if labels.get(key) == value:
            del labels[key]
    if labels != (spec.get("Labels") or {}):
        spec["Labels"] = labels
        client.update_node(record.node_id, node["Version"]["Index"], spec)
