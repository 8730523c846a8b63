"""The Docker-in-Docker nodes of a multi-node swarm rehearsal (`../shared/offline-docker/
swarm-nodes`), named in `REHEARSAL_IMAGE_NODES` and reached through `docker exec`. There is no
registry: each image the program builds is copied into every node that lacks it (`docker save` on
the manager, `docker load` in the node), standing in for a push and the pulls (docs/swarm.md,
"Image distribution").
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from rehearsal.engine import DOCKER_CLI, DOCKER_SOCKET, RehearsalError

IMAGE_NODES_VARIABLE = "REHEARSAL_IMAGE_NODES"
# The engine the node containers run on (whatever DOCKER_HOST says: that is their manager).
LOCAL_ENGINE = f"unix://{DOCKER_SOCKET}"


def node_containers() -> list[str]:
    """The node containers named in REHEARSAL_IMAGE_NODES (none: a single engine)."""
    return os.environ.get(IMAGE_NODES_VARIABLE, "").split()


def node_running(node: str) -> bool:
    """Whether the node container runs (a lost node, removed or killed, gets no image: a pull
    would never reach it either)."""
    inspected = subprocess.run(
        [DOCKER_CLI, "-H", LOCAL_ENGINE, "inspect", "--format", "{{.State.Running}}", node],
        capture_output=True,
        check=False,
    )
    return inspected.stdout.decode().strip() == "true"


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
    """Load `image` (just built on the manager, id `image_id`) into every node that lacks that id,
    in parallel; the nodes it was loaded into."""
    live = [node for node in node_containers() if node_running(node)]
    lacking = [node for node in live if image_id_on(node, image) != image_id]
    if not lacking:
        return []
    started = time.monotonic()
    with tempfile.NamedTemporaryFile(prefix="rehearsal-image-", suffix=".tar") as archive:
        # DOCKER_HOST is the manager: the image is saved from there.
        saved = subprocess.run([DOCKER_CLI, "save", "--output", archive.name, image], check=False)
        if saved.returncode != 0:
            raise RehearsalError(f"docker save {image} failed")
        load = ["docker", "load", "-q"]
        with ThreadPoolExecutor() as pool:
            loads = pool.map(lambda node: node_exec(node, load, stdin_path=archive.name), lacking)
        for node, loaded in zip(lacking, loads, strict=True):
            if loaded.returncode != 0 or image_id_on(node, image) != image_id:
                raise RehearsalError(f"docker load into {node} failed: {loaded.stderr.decode()}")
    log(f"  loaded {image} into {', '.join(lacking)} in {time.monotonic() - started:.0f}s")
    return lacking
