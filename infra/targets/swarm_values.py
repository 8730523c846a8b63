"""Values in the form the provider reads a Swarm service's back in.

Sent in any other form, a value would differ from what the provider's Read writes into the state,
and every `up` would show a diff and update the service (docs/swarm.md, "Provider behaviour";
kreuzwerker/terraform-provider-docker v4.5.0 `resource_docker_service_structures.go`, the code
pulumi-docker 5.x bridges).
"""

from __future__ import annotations

from collections.abc import Sequence

import pulumi_docker as docker


def go_duration(seconds: int) -> str:
    """Seconds as the provider reads a service's durations back: Go's Duration.String() through
    `shortDur` ("0s", "45s", "2m", "1m30s", "1h"; kreuzwerker/terraform-provider-docker v4.5.0
    resource_docker_service_structures.go). Sent in any other form ("2m0s"), every `up` would
    show a diff, and update the service (docs/swarm.md, "Provider behaviour")."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        text = f"{hours}h{minutes}m{secs}s"
    elif minutes:
        text = f"{minutes}m{secs}s"
    else:
        text = f"{secs}s"
    return short_duration(text)


def short_duration(text: str) -> str:
    """A Go duration string in `shortDur`'s form: "1m0s" -> "1m", "1h0m0s" -> "1h"."""
    if text.endswith("m0s"):
        text = text[:-2]
    if text.endswith("h0m"):
        text = text[:-2]
    return text


def node_constraints(labels: Sequence[str]) -> list[str]:
    """`key=value` node labels as Swarm placement constraints."""
    pairs = (label.partition("=") for label in labels)
    return [f"node.labels.{key}=={value}" for key, _, value in pairs]


# A tmpfs's root mode when none is given (Docker's `tmpfs-mode` default).
TMPFS_DEFAULT_MODE = 0o1777


def tmpfs_options(options: str) -> docker.ServiceTaskSpecContainerSpecMountTmpfsOptionsArgs:
    # Swarm's tmpfs mounts take a size and a mode only (no noexec/nosuid before API 1.46).
    size_bytes: int | None = None
    mode: int | None = None
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    for option in options.split(","):
        key, _, value = option.partition("=")
        if key == "size":
            size_bytes = int(value[:-1]) * units[value[-1]] if value[-1] in units else int(value)
        elif key == "mode":
            mode = int(value, 8)
    if mode == TMPFS_DEFAULT_MODE:
        # The provider reads the mode back as `int(Mode.Perm())` (flattenServiceMounts), dropping
        # the sticky bit: 1777 would differ on every `up`. 1777 is a tmpfs's default: not sent.
        mode = None
    elif mode is not None and mode & ~0o777:
        raise ValueError(
            f"tmpfs mode {mode:o}: the provider reads a service's tmpfs mode back without the "
            "sticky/setuid/setgid bits, so only 1777 (the default) or a mode up to 777 is stable"
        )
    return docker.ServiceTaskSpecContainerSpecMountTmpfsOptionsArgs(
        size_bytes=size_bytes, mode=mode
    )
