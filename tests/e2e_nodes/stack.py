"""The swarm stack on several Docker-in-Docker nodes as the tests see it: the manager through
DOCKER_HOST (services, tasks, nodes), each node's engine through `docker exec` into its container
(rehearsal/nodes.py), published ports at the nodes' own addresses."""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import docker
import docker.models.services

from deploy.stack import SwarmStack, eventually
from rehearsal.nodes import LOCAL_ENGINE, node_exec
from rehearsal.runner import REPO_ROOT

SWARM_NODES = REPO_ROOT.parent / "shared" / "offline-docker" / "swarm-nodes"
NODES_NETWORK = "swarm-nodes"  # the bridge network the node containers share (swarm-nodes)


def swarm_nodes(*args: str) -> None:
    """`../shared/offline-docker/swarm-nodes ARGS` (kill K, start K), on this machine's engine."""
    environment = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
    subprocess.run([str(SWARM_NODES), *args], env=environment, check=True, capture_output=True)


def node_address(node: str) -> str:
    """The node container's address on the nodes' network: where host-mode ports answer."""
    local = docker.APIClient(base_url=LOCAL_ENGINE, version="auto")
    networks = local.inspect_container(node)["NetworkSettings"]["Networks"]
    return str(networks[NODES_NETWORK]["IPAddress"])


@dataclass
class NodesStack(SwarmStack):
    entry_node: str = ""  # the node whose published API port the clients use

    def manager(self) -> docker.DockerClient:
        return docker.from_env()  # DOCKER_HOST: the manager, as the provider reaches it

    def service(self, role: str) -> docker.models.services.Service:
        (name,) = self.names(role)
        return self.manager().services.get(name)

    def node_names(self) -> dict[str, str]:
        """Node id -> hostname (the node container's name)."""
        return {
            node.id: str(node.attrs["Description"]["Hostname"])
            for node in self.manager().nodes.list()
        }

    def node_state(self, hostname: str) -> str:
        for node in self.manager().nodes.list():
            if node.attrs["Description"]["Hostname"] == hostname:
                return str(node.attrs["Status"]["State"])
        raise AssertionError(f"no node {hostname}")

    def placement(self, role: str) -> dict[str, list[dict[str, Any]]]:
        """The role's running tasks by node hostname."""
        names = self.node_names()
        by_node: dict[str, list[dict[str, Any]]] = {}
        for task in self.running_tasks(role):
            by_node.setdefault(names[task["NodeID"]], []).append(task)
        return by_node

    def task_node(self, task: dict[str, Any]) -> str:
        return self.node_names()[task["NodeID"]]

    def exec_in_task(self, task: dict[str, Any], command: list[str]) -> tuple[int, str]:
        container = task["Status"]["ContainerStatus"]["ContainerID"]
        done = node_exec(self.task_node(task), ["docker", "exec", container, *command])
        return done.returncode, (done.stdout + done.stderr).decode(errors="replace")

    def task_logs(self, task: dict[str, Any]) -> str:
        container = task["Status"]["ContainerStatus"]["ContainerID"]
        done = node_exec(self.task_node(task), ["docker", "logs", container])
        return (done.stdout + done.stderr).decode(errors="replace")

    def psql(self, sql: str, *, user: str = "taskstack") -> str:
        (task,) = self.running_tasks("postgres")
        code, output = self.exec_in_task(
            task,
            ["psql", "-U", user, "-d", "taskstack", "-v", "ON_ERROR_STOP=1", "-Atc", sql],
        )
        assert code == 0, output
        return output.strip()

    def redis_cli(self, *args: str) -> str:
        (task,) = self.running_tasks("redis")
        quoted = " ".join(args)
        code, output = self.exec_in_task(
            task,
            ["sh", "-c", f'REDISCLI_AUTH="$(cat /run/secrets/redis_password)" redis-cli {quoted}'],
        )
        assert code == 0, output
        return output.strip()

    def url(self, node: str, output: str = "apiUrl") -> str:
        """The stack's published port (`apiUrl`, `flowerUrl`) at the node's own address."""
        return f"http://{node_address(node)}:{urlsplit(str(self.outputs[output])).port}"

    @property
    def api_url(self) -> str:
        """The API at `entry_node`, else at the first node (by name) that runs a replica."""
        return self.url(self.entry_node or sorted(self.placement("api"))[0])

    def node_volumes(self, node: str) -> set[str]:
        listed = node_exec(node, ["docker", "volume", "ls", "--format", "{{.Name}}"])
        return set(listed.stdout.decode().split())

    def wait_settled(self, role: str, *, within: float = 300) -> None:
        """Swarm's own verdict: no rolling update in progress and every replica running."""

        seen: list[str] = []

        def settled() -> bool:
            """the rollout settled with every replica running"""
            service = self.service(role)
            update = (service.attrs.get("UpdateStatus") or {}).get("State")
            replicas = int(service.attrs["Spec"]["Mode"]["Replicated"]["Replicas"])
            running = len(self.running_tasks(role))
            tasks = [
                f"{t.get('NodeID', '')[:6]} desired={t['DesiredState']} {t['Status']['State']}"
                f" {t['Status'].get('Err', '')}".strip()
                for t in service.tasks(filters={"desired-state": "running"})
            ]
            seen[:] = [f"{role}: update {update}, {running} of {replicas} running; {tasks}"]
            return update in (None, "completed") and running == replicas

        try:
            eventually(settled, within=within, every=1)
        except AssertionError as error:
            raise AssertionError(f"{error} ({seen[-1] if seen else role})") from None

    def database_now(self) -> float:
        return float(self.psql("SELECT extract(epoch FROM clock_timestamp())"))


def write_report(path: Path, report: dict[str, Any]) -> None:
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{path.name}: {json.dumps(report, indent=2)}")


def monotonic_since(start: float) -> float:
    return round(time.monotonic() - start, 2)
