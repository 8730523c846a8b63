"""What a rehearsal (`make rehearse`, `make e2e`, `make e2e-swarm`) needs from this machine, checked
before anything runs: each missing piece is named with the command that provides it.

`python -m rehearsal check [--chromium]` exits 1 when anything is missing, else 0.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import requests.exceptions
import yaml

from rehearsal import engine
from rehearsal.runner import REPO_ROOT

# On a machine with no registry access these scripts (beside the repository) start an engine and
# build the base images under their official names; elsewhere `docker pull` fetches them.
ENGINE_COMMAND = "bash ../shared/offline-docker/engine"
IMAGES_COMMAND = "bash ../shared/offline-docker/images"
CHROMIUM_COMMAND = "apt-get install -y chromium"


@dataclass
class Missing:
    what: str
    command: str


def base_images(repo: Path = REPO_ROOT) -> list[str]:
    """The images nothing can build here: the Dockerfile's base (its `PYTHON_IMAGE` default) and
    the PostgreSQL and Redis images the project declares (`Pulumi.yaml` defaults)."""
    images = re.findall(r"^ARG PYTHON_IMAGE=(\S+)", (repo / "Dockerfile").read_text(), re.M)
    declared = yaml.safe_load((repo / "Pulumi.yaml").read_text()).get("config") or {}
    for key in ("postgresImage", "redisImage"):
        default = (declared.get(key) or {}).get("default")
        if default:
            images.append(str(default))
    return images


def missing_prerequisites(*, chromium: bool = False) -> list[Missing]:
    missing: list[Missing] = []
    if not Path(engine.DOCKER_CLI).exists():
        missing.append(
            Missing(f"the Docker CLI {engine.DOCKER_CLI} (image builds use it)", ENGINE_COMMAND)
        )
    try:
        client = engine.api_client(timeout=5)
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError):
        missing.append(
            Missing(f"a Docker engine answering on {engine.docker_host()}", ENGINE_COMMAND)
        )
    else:
        for image in base_images():
            try:
                client.inspect_image(image)
            except docker.errors.ImageNotFound:
                missing.append(
                    Missing(
                        f"the base image {image} on the engine (nothing is pulled)",
                        f"{IMAGES_COMMAND}  (with a registry: docker pull {image})",
                    )
                )
    if chromium and shutil.which("chromium") is None:
        missing.append(Missing("Debian's chromium (the Flower dashboard test)", CHROMIUM_COMMAND))
    return missing


def report(missing: list[Missing]) -> str:
    lines = ["The rehearsal cannot run on this machine yet; missing:"]
    for item in missing:
        lines.append(f"  - {item.what}\n      provided by: {item.command}")
    return "\n".join(lines)
