"""The forms config values take: image references, identifiers, node labels, CPUs as the docker
provider reads them back. `model.py` validates each key against them."""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal

# An image reference pinned to a tag or a digest (`name:tag`, `name@sha256:…`, optional registry).
PINNED_IMAGE = re.compile(
    r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|@sha256:[a-f0-9]{64})$"
)
REPOSITORY = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$")
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
CPUS = re.compile(r"^(?:[0-9]+(?:\.[0-9]{1,2})?)$")


def provider_cpus(value: str) -> str:
    """`cpus` as the docker provider writes it back into the state: NanoCPUs through
    `nanoInt64ToDecimalString` (kreuzwerker/terraform-provider-docker v4.5.0
    internal/provider/helpers.go): "2" -> "2.0", "0.50" -> "0.5", "0.25" -> "0.25"."""
    nanos = int(Decimal(value) * 1_000_000_000)
    nine = f"{Decimal(nanos) / Decimal(1_000_000_000):.9f}"
    if nine.count("0") == 9:
        return (
            f"{(Decimal(nanos) / Decimal(1_000_000_000)).quantize(Decimal('0.1'), ROUND_HALF_UP)}"
        )
    return nine.rstrip("0")


# A Swarm node label as `docker node update --label-add` takes it: key=value, key in DNS style.
NODE_LABEL = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*=[A-Za-z0-9_.-]+$")


def positive_below(entry: str, bound: int) -> bool:
    """`NAME=value` with a whole value from 1 to bound - 1."""
    value = entry.partition("=")[2]
    return value.isdigit() and 0 < int(value) < bound
