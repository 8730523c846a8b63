"""What a rehearsal needs from this machine, each missing piece named with the command that provides
it: `python -m rehearsal check [--chromium]` exits 1 when anything is missing.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import docker
import docker.errors
import requests.exceptions

from rehearsal import engine
from rehearsal.runner import REPO_ROOT, read_project

# On a machine with no registry access these scripts (beside the repository) start an engine and
# build the base images under their official names; elsewhere `docker pull` fetches them.
ENGINE_COMMAND = "bash ../shared/offline-docker/engine"
IMAGES_COMMAND = "bash ../shared/offline-docker/images"
CHROMIUM_COMMAND = "apt-get install -y chromium"
WRK_COMMAND = "apt-get install -y wrk"


def base_images(repo: Path = REPO_ROOT) -> list[str]:
    """The images nothing can build here: the Dockerfile's base (its `PYTHON_IMAGE` default) and
    the images the project declares (the defaults of its `*Image` keys in `Pulumi.yaml`)."""
    images = re.findall(r"^ARG PYTHON_IMAGE=(\S+)", (repo / "Dockerfile").read_text(), re.M)
    declared = read_project(repo).defaults
    return images + [image for key, image in declared.items() if key.endswith("Image") and image]


def missing_prerequisites(*, chromium: bool = False) -> list[tuple[str, str]]:
    """What is missing, each with the command that provides it."""
    missing = []
    if not Path(engine.DOCKER_CLI).exists():
        missing.append(
            (f"the Docker CLI {engine.DOCKER_CLI} (image builds use it)", ENGINE_COMMAND)
        )
    try:
        client = engine.api_client(timeout=5)
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError):
        missing.append((f"a Docker engine answering on {engine.docker_host()}", ENGINE_COMMAND))
    else:
        for image in base_images():
            try:
                client.inspect_image(image)
            except docker.errors.ImageNotFound:
                pull = f"{IMAGES_COMMAND}  (with a registry: docker pull {image})"
                missing.append((f"the base image {image} on the engine (nothing is pulled)", pull))
    if chromium and shutil.which("chromium") is None:
        missing.append(("Debian's chromium (the end-to-end tests' browser)", CHROMIUM_COMMAND))
    if chromium and shutil.which("wrk") is None:
        missing.append(("wrk (the end-to-end tests' flooding client)", WRK_COMMAND))
    return missing


def report(missing: list[tuple[str, str]]) -> str:
    lines = [f"  - {what}\n      provided by: {command}" for what, command in missing]
    return "\n".join(["The rehearsal cannot run on this machine yet; missing:", *lines])
