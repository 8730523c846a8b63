"""The simulated nodes of a multi-node swarm rehearsal (`../shared/offline-docker/swarm-nodes`):
Docker-in-Docker containers on this machine's engine. The provider reaches their manager over TCP
(`DOCKER_HOST`); the rehearsal reaches every node through `docker exec` into its container.

`REHEARSAL_IMAGE_NODES` names those containers (`scripts/e2e-swarm-nodes.sh` sets it). There is no
registry: an image the program builds exists on the manager that built it only. After each build
the rehearsal copies it into every listed node that lacks it (`docker save` on the manager,
`docker load` in the node), standing in for the push and the pulls a registry serves on a real
cluster (docs/swarm.md, "Image distribution").
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence

from rehearsal.engine import DOCKER_CLI, DOCKER_SOCKET, RehearsalError

IMAGE_NODES_VARIABLE = "REHEARSAL_IMAGE_NODES"
# The engine the node containers run on (whatever DOCKER_HOST says: that is their manager).
LOCAL_ENGINE = f"unix://{DOCKER_SOCKET}"


def node_containers() -> list[str]:
    """The node containers named in REHEARSAL_IMAGE_NODES (none: a single engine)."""
    return os.environ.get(IMAGE_NODES_VARIABLE, "").split()


def node_exec(
    node: str, command: Sequence[str], *, stdin_path: str | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[bytes]:
    """`docker exec` into the node container `node` on this machine's engine (its own `docker`
    CLI then talks to the node's engine)."""
    interactive = ["-i"] if stdin_path else []
    with open(stdin_path or os.devnull, "rb") as stdin:
        return subprocess.run(
            [DOCKER_CLI, "-H", LOCAL_ENGINE, "exec", *interactive, node, *command],
            stdin=stdin,
            capture_output=True,
            timeout=timeout,
            check=False,
        )


def image_id_on(node: str, image: str) -> str:
    """The id of `image` in the node's engine, or "" when it has none."""
    inspected = node_exec(node, ["docker", "image", "inspect", "--format", "{{.Id}}", image])
    return inspected.stdout.decode().strip() if inspected.returncode == 0 else ""


def distribute_image(image: str, image_id: str, *, log: Callable[[str], None] = print) -> list[str]:
    """Load `image` (just built on the manager, id `image_id`) into every node that lacks that id;
    the nodes it was loaded into."""
    lacking = [node for node in node_containers() if image_id_on(node, image) != image_id]
    if not lacking:
        return []
    started = time.monotonic()
    with tempfile.NamedTemporaryFile(prefix="rehearsal-image-", suffix=".tar") as archive:
        # DOCKER_HOST is the manager: the image is saved from there.
        saved = subprocess.run(
            [DOCKER_CLI, "save", image], stdout=archive, stderr=subprocess.PIPE, check=False
        )
        if saved.returncode != 0:
            raise RehearsalError(f"docker save {image} failed: {saved.stderr.decode().strip()}")
        archive.flush()
        loads = {
            node: subprocess.Popen(
                [DOCKER_CLI, "-H", LOCAL_ENGINE, "exec", "-i", node, "docker", "load", "-q"],
                stdin=open(archive.name, "rb"),  # noqa: SIM115 - closed with the process below
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for node in lacking
        }
        for node, process in loads.items():
            _, error = process.communicate(timeout=600)
            if process.stdin is not None:
                process.stdin.close()
            if process.returncode != 0:
                raise RehearsalError(f"docker load into {node} failed: {error.decode().strip()}")
    for node in lacking:
        if image_id_on(node, image) != image_id:
            raise RehearsalError(f"{node}: {image} is not {image_id[:19]} after the load")
    log(f"  loaded {image} into {', '.join(lacking)} in {time.monotonic() - started:.0f}s")
    return lacking
