"""The read-back model: the engine diffs a program's new inputs against what the provider's Read
last wrote, so a value read back in another form is a change on every `pulumi up`. Each rule is one
such behaviour of kreuzwerker/terraform-provider-docker v4.5.0 (which pulumi-docker 5.x bridges),
citing its source; types without a rule read back what they were sent. The state keeps a digest
per property (`property_digests`); `changed_properties` is the engine's diff against them.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Mapping
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, NamedTuple

from rehearsal.engine import go_duration_nanoseconds
from rehearsal.tokens import CONTAINER, SERVICE

PROVIDER = "kreuzwerker/terraform-provider-docker v4.5.0 internal/provider/"


class Observed(NamedTuple):
    """What the engine reports about the object when the provider reads it."""

    running: bool = True
    exit_code: int | None = None
    image_id: str = ""


RuleFunction = Callable[[dict[str, Any], Observed], None]


class Rule(NamedTuple):
    name: str
    resource_type: str
    source: str  # file and function under PROVIDER
    what: str
    apply: RuleFunction
    # Order only (a set or a map): applied to what is sent too, since order is not a change.
    canonical: bool = False


RULES: list[Rule] = []
FUNCS = "resource_docker_container_funcs.go"
STRUCT = "resource_docker_service_structures.go"


def rule(
    resource_type: str, source: str, *, canonical: bool = False
) -> Callable[[RuleFunction], RuleFunction]:
    """Register a rule named after its function (`container_stopped`: container-stopped), whose
    docstring says what the provider does."""

    def register(apply: RuleFunction) -> RuleFunction:
        name = apply.__name__.replace("_", "-")
        RULES.append(Rule(name, resource_type, source, apply.__doc__ or "", apply, canonical))
        return apply

    return register


def go_duration_string(nanoseconds: int) -> str:
    """Go's `time.Duration.String()` ("1m0s", "1h0m0s", "1.5s", "500ms")."""
    if nanoseconds == 0:
        return "0s"
    if nanoseconds < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000)):
            if nanoseconds % size == 0:
                return f"{nanoseconds // size}{unit}"
        return f"{nanoseconds}ns"
    hours, rest = divmod(nanoseconds, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    seconds = f"{Decimal(rest).scaleb(-9):f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{seconds}"
    return f"{minutes}m{seconds}" if minutes else seconds


def short_duration(nanoseconds: int) -> str:
    """resource_docker_service_structures.go `shortDur`: Duration.String() without a trailing
    "0s" after minutes, nor "0m" after hours ("1m0s" -> "1m", "1h0m0s" -> "1h")."""
    text = go_duration_string(nanoseconds)
    text = text[:-2] if text.endswith("m0s") else text
    return text[:-2] if text.endswith("h0m") else text


def nano_decimal_string(nano_cpus: int) -> str:
    """helpers.go `nanoInt64ToDecimalString`, through big.Rat.FloatString (half away from zero):
    NanoCPUs as the decimal string Read writes back (2e9 -> "2.0", 5e8 -> "0.5")."""
    if nano_cpus == 0:
        return "0"
    value = Decimal(nano_cpus).scaleb(-9)
    nine = f"{value.quantize(Decimal('1e-9'), rounding=ROUND_HALF_UP):f}"
    if nine.count("0") == 9:
        return f"{value.quantize(Decimal('0.1'), rounding=ROUND_HALF_UP):f}"
    return nine.rstrip("0")


def cpus_nanoseconds(cpus: str) -> int:
    """The provider's create: `cpus` parsed as a float times 1e9 (resource_docker_container_funcs.go
    resourceDockerContainerCreate, NanoCPUs)."""
    return int(Decimal(str(cpus)) * 1_000_000_000)


@rule(CONTAINER, f"{FUNCS} resourceDockerContainerRead (Healthcheck.Interval.String())")
def container_go_durations(state: dict[str, Any], _: Observed) -> None:
    """healthcheck durations in Go's long form: "1m" -> "1m0s"."""
    check = state.get("healthcheck") or {}
    for key in ("interval", "timeout", "startPeriod"):
        if check.get(key) is not None:
            check[key] = go_duration_string(go_duration_nanoseconds(str(check[key])))


@rule(CONTAINER, f"helpers.go nanoInt64ToDecimalString, from {FUNCS} resourceDockerContainerRead")
def container_cpus_decimal(state: dict[str, Any], _: Observed) -> None:
    """cpus from NanoCPUs: "2" -> "2.0", "0.50" -> "0.5" (cpus forces a new container)."""
    if state.get("cpus"):
        state["cpus"] = nano_decimal_string(cpus_nanoseconds(str(state["cpus"])))


@rule(CONTAINER, f"{FUNCS} resourceDockerContainerRead (if !container.State.Running)")
def container_stopped(state: dict[str, Any], observed: Observed) -> None:
    """A stopped container: exit_code set (a failed one-shot keeps it until replaced), must_run
    written false when it was true (an update starts it again)."""
    if not observed.running:
        state["exitCode"] = observed.exit_code
        if state.get("mustRun", True):
            state["mustRun"] = False


@rule(CONTAINER, f"{FUNCS} resourceDockerContainerRead (image: container.Image for sha256:)")
def container_image_id(state: dict[str, Any], observed: Observed) -> None:
    """An image given as sha256:<id> reads back as the container's image id; a name as given."""
    if str(state.get("image", "")).startswith("sha256:") and observed.image_id:
        state["image"] = observed.image_id


@rule(CONTAINER, "resource_docker_container.go schema (envs: TypeSet)", canonical=True)
def container_envs_set(state: dict[str, Any], _: Observed) -> None:
    """envs is a set: order is not a change."""
    if state.get("envs"):
        state["envs"] = sorted(state["envs"])


def _container_spec(state: dict[str, Any]) -> dict[str, Any]:
    return (state.get("taskSpec") or {}).get("containerSpec") or {}


@rule(SERVICE, f"{STRUCT} flattenServiceMounts (int(Mode.Perm()))")
def service_tmpfs_mode_perm(state: dict[str, Any], _: Observed) -> None:
    """tmpfs mode without the sticky/setuid bits: 1023 (0o1777) -> 511 (0o777); the program
    sends no mode for 1777 for this reason (docs/swarm.md)."""
    for mount in _container_spec(state).get("mounts") or []:
        options = mount.get("tmpfsOptions") or {}
        if options.get("mode") is not None:
            options["mode"] = int(options["mode"]) & 0o777


@rule(
    SERVICE,
    f"{STRUCT} shortDur (flattenServiceHealthcheck, flattenContainerSpec, "
    "flattenTaskRestartPolicy, flattenServiceUpdateOrRollbackConfig)",
)
def service_short_durations(state: dict[str, Any], _: Observed) -> None:
    """Durations shortened: "1m0s" -> "1m", "1h0m0s" -> "1h"."""
    spec = _container_spec(state)
    blocks = [
        (spec.get("healthcheck"), ("interval", "timeout", "startPeriod")),
        (spec, ("stopGracePeriod",)),
        ((state.get("taskSpec") or {}).get("restartPolicy"), ("delay", "window")),
        (state.get("updateConfig"), ("delay", "monitor")),
        (state.get("rollbackConfig"), ("delay", "monitor")),
    ]
    for block, keys in blocks:
        for key in keys:
            if block and block.get(key):
                block[key] = short_duration(go_duration_nanoseconds(str(block[key])))


@rule(
    SERVICE,
    f"{STRUCT} flattenContainerSpec (mapStringSliceToMap); sent by createContainerSpec "
    "(mapTypeMapValsToStringSlice, Go map order)",
    canonical=True,
)
def service_env_map(state: dict[str, Any], _: Observed) -> None:
    """env reads back as a map (no order); an update re-sends it in Go map order, which Swarm
    takes as a new task spec and rolls the tasks."""
    spec = _container_spec(state)
    if spec.get("env"):
        spec["env"] = dict(sorted(spec["env"].items()))


@rule(SERVICE, f"{STRUCT} flattenServiceMounts (schema.Set)", canonical=True)
def service_mounts_set(state: dict[str, Any], _: Observed) -> None:
    """mounts are a set: order is not a change."""
    spec = _container_spec(state)
    if spec.get("mounts"):
        spec["mounts"] = sorted(spec["mounts"], key=lambda m: json.dumps(m, sort_keys=True))


# Schema defaults the engine sees when an input is left unset (the diff compares them).
DEFAULTS: Mapping[str, Mapping[str, Any]] = {CONTAINER: {"mustRun": True}}


def read_back(
    resource_type: str,
    inputs: Mapping[str, Any],
    observed: Observed | None = None,
    *,
    canonical_only: bool = False,
) -> dict[str, Any]:
    """The state the provider's Read writes for these inputs, rule by rule; `canonical_only`: the
    inputs as the engine holds them when sent (unset values dropped, schema defaults filled, sets
    and maps in a canonical order)."""
    state = {k: copy.deepcopy(v) for k, v in inputs.items() if v is not None}
    for key, default in DEFAULTS.get(resource_type, {}).items():
        state.setdefault(key, default)
    for each in RULES:
        if each.resource_type == resource_type and (each.canonical or not canonical_only):
            each.apply(state, observed or Observed())
    return state


# Computed by the provider, never sent: not part of the diff.
COMPUTED = frozenset({"exitCode", "containerLogs"})


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _flatten(value: Any, path: str, into: dict[str, Any]) -> None:
    # Nested blocks by dotted path, so a diff names the property that changed
    # (`taskSpec.containerSpec.image`); lists are compared whole.
    if isinstance(value, Mapping) and value:
        for key, item in value.items():
            if item is not None:
                _flatten(item, f"{path}.{key}", into)
    else:
        into[path] = value


def property_digests(state: Mapping[str, Any]) -> dict[str, str]:
    """One digest per property (nested blocks by dotted path) of a state: what the rehearsal keeps
    of it, since values carry secrets."""
    flat: dict[str, Any] = {}
    for key, value in state.items():
        if key not in COMPUTED and value is not None:
            _flatten(value, key, flat)
    return {key: _digest(value) for key, value in flat.items()}


def changed_properties(
    resource_type: str, inputs: Mapping[str, Any], recorded: Mapping[str, str]
) -> list[str]:
    """The engine's diff: the new inputs, as sent, against the digests of the last read-back."""
    new = property_digests(read_back(resource_type, inputs, canonical_only=True))
    return sorted(key for key in set(new) | set(recorded) if new.get(key) != recorded.get(key))
