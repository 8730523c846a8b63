"""The read-back model: what the provider's Read writes into the state, which the next `up` diffs.

The Pulumi engine compares a program's new inputs with the state the provider's Read last wrote,
not with what the program sent. Where the provider reads a value back in another form, every later
`pulumi up` shows a change. Each rule below is one such provider behaviour, citing the function of
kreuzwerker/terraform-provider-docker v4.5.0 (`internal/provider/`, which pulumi-docker 5.x
bridges) it comes from; `read_back` applies a resource type's rules to the inputs sent (plus what
the engine reports: running or not, exit code, image id) and the state keeps one digest per
property of the result (`property_digests`: inputs carry secrets, so values are never written).
`changed_properties` is the engine's diff: the new inputs, as sent, against those digests.

Resource types without a rule (networks, volumes, images, secrets) read back what they were sent.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any

from rehearsal.engine import go_duration_nanoseconds
from rehearsal.tokens import CONTAINER, SERVICE

PROVIDER = "kreuzwerker/terraform-provider-docker v4.5.0 internal/provider/"


@dataclass(frozen=True)
class Observed:
    """What the engine reports about the object when the provider reads it."""

    running: bool = True
    exit_code: int | None = None
    image_id: str = ""


@dataclass(frozen=True)
class Rule:
    name: str
    resource_type: str
    source: str  # file and function under PROVIDER
    what: str
    apply: Callable[[dict[str, Any], Observed], None]


# -- Go formatting the provider uses ---------------------------------------------------------------


def go_duration_string(nanoseconds: int) -> str:
    """Go's `time.Duration.String()` for whole seconds and above ("1m0s", "1h0m0s", "500ms")."""
    if nanoseconds == 0:
        return "0s"
    if nanoseconds < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000)):
            if nanoseconds % size == 0:
                return f"{nanoseconds // size}{unit}"
        return f"{nanoseconds}ns"
    seconds = Fraction(nanoseconds, 1_000_000_000)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{secs.numerator}s" if secs.denominator == 1 else f"{float(secs):g}s"
    if hours:
        return f"{hours}h{minutes}m{text}"
    if minutes:
        return f"{minutes}m{text}"
    return text


def short_duration(nanoseconds: int) -> str:
    """resource_docker_service_structures.go `shortDur`: Duration.String() without a trailing
    "0s" after minutes, nor "0m" after hours ("1m0s" -> "1m", "1h0m0s" -> "1h")."""
    text = go_duration_string(nanoseconds)
    if text.endswith("m0s"):
        text = text[:-2]
    if text.endswith("h0m"):
        text = text[:-2]
    return text


def nano_decimal_string(nano_cpus: int) -> str:
    """helpers.go `nanoInt64ToDecimalString`: NanoCPUs as the decimal string Read writes back
    (2e9 -> "2.0", 5e8 -> "0.5", 2.5e8 -> "0.25")."""
    if nano_cpus == 0:
        return "0"
    value = Fraction(nano_cpus, 1_000_000_000)
    nine = _float_string(value, 9)
    if nine.count("0") == 9:
        return _float_string(value, 1)
    return nine.rstrip("0")


def _float_string(value: Fraction, places: int) -> str:
    # big.Rat.FloatString: rounded half away from zero to `places` decimals.
    scaled = value * 10**places
    whole = int(scaled + Fraction(1, 2)) if scaled >= 0 else -int(-scaled + Fraction(1, 2))
    sign = "-" if whole < 0 else ""
    digits = str(abs(whole)).rjust(places + 1, "0")
    return f"{sign}{digits[:-places]}.{digits[-places:]}"


def cpus_nanoseconds(cpus: str) -> int:
    """The provider's create: `cpus` parsed as a float times 1e9 (resource_docker_container_funcs.go
    resourceDockerContainerCreate, NanoCPUs)."""
    return int(Decimal(str(cpus)) * 1_000_000_000)


# -- container rules -------------------------------------------------------------------------------


def _container_durations(state: dict[str, Any], _: Observed) -> None:
    check = state.get("healthcheck")
    if check:
        for key in ("interval", "timeout", "startPeriod"):
            if key in check and check[key] is not None:
                check[key] = go_duration_string(go_duration_nanoseconds(str(check[key])))


def _container_cpus(state: dict[str, Any], _: Observed) -> None:
    if state.get("cpus"):
        state["cpus"] = nano_decimal_string(cpus_nanoseconds(str(state["cpus"])))


def _container_stopped(state: dict[str, Any], observed: Observed) -> None:
    if not observed.running:
        state["exitCode"] = observed.exit_code
        if state.get("mustRun", True):
            state["mustRun"] = False


def _container_image(state: dict[str, Any], observed: Observed) -> None:
    image = str(state.get("image", ""))
    if image.startswith("sha256:") and observed.image_id:
        state["image"] = observed.image_id


def _container_envs_set(state: dict[str, Any], _: Observed) -> None:
    if state.get("envs"):
        state["envs"] = sorted(state["envs"])


# -- service rules ---------------------------------------------------------------------------------


def _service_tmpfs_mode(state: dict[str, Any], _: Observed) -> None:
    spec = (state.get("taskSpec") or {}).get("containerSpec") or {}
    for mount in spec.get("mounts") or []:
        options = mount.get("tmpfsOptions") or {}
        if options.get("mode") is not None:
            options["mode"] = int(options["mode"]) & 0o777


def _short(block: dict[str, Any] | None, keys: tuple[str, ...]) -> None:
    for key in keys:
        if block and block.get(key):
            block[key] = short_duration(go_duration_nanoseconds(str(block[key])))


def _service_durations(state: dict[str, Any], _: Observed) -> None:
    task = state.get("taskSpec") or {}
    spec = task.get("containerSpec") or {}
    _short(spec.get("healthcheck"), ("interval", "timeout", "startPeriod"))
    _short(spec, ("stopGracePeriod",))
    _short(task.get("restartPolicy"), ("delay", "window"))
    _short(state.get("updateConfig"), ("delay", "monitor"))
    _short(state.get("rollbackConfig"), ("delay", "monitor"))


def _service_env_map(state: dict[str, Any], _: Observed) -> None:
    spec = (state.get("taskSpec") or {}).get("containerSpec") or {}
    if spec.get("env"):
        spec["env"] = dict(sorted(spec["env"].items()))


def _service_mounts_set(state: dict[str, Any], _: Observed) -> None:
    spec = (state.get("taskSpec") or {}).get("containerSpec") or {}
    if spec.get("mounts"):
        spec["mounts"] = sorted(spec["mounts"], key=lambda m: json.dumps(m, sort_keys=True))


FUNCS = "resource_docker_container_funcs.go"
STRUCT = "resource_docker_service_structures.go"
RULES: tuple[Rule, ...] = (
    Rule(
        "container-go-durations",
        CONTAINER,
        f"{FUNCS} resourceDockerContainerRead (Healthcheck.Interval.String())",
        'healthcheck durations in Go\'s long form: "1m" -> "1m0s"',
        _container_durations,
    ),
    Rule(
        "container-cpus-decimal",
        CONTAINER,
        f"helpers.go nanoInt64ToDecimalString, from {FUNCS} resourceDockerContainerRead",
        'cpus from NanoCPUs: "2" -> "2.0", "0.50" -> "0.5" (cpus forces a new container)',
        _container_cpus,
    ),
    Rule(
        "container-stopped",
        CONTAINER,
        f"{FUNCS} resourceDockerContainerRead (if !container.State.Running)",
        "a stopped container: exit_code set (a failed one-shot keeps it until replaced), "
        "must_run written false when it was true (an update starts it again)",
        _container_stopped,
    ),
    Rule(
        "container-image-id",
        CONTAINER,
        f"{FUNCS} resourceDockerContainerRead (image: container.Image for sha256:)",
        "an image given as sha256:<id> reads back as the container's image id; a name as given",
        _container_image,
    ),
    Rule(
        "container-envs-set",
        CONTAINER,
        "resource_docker_container.go schema (envs: TypeSet)",
        "envs is a set: order is not a change",
        _container_envs_set,
    ),
    Rule(
        "service-tmpfs-mode-perm",
        SERVICE,
        f"{STRUCT} flattenServiceMounts (int(Mode.Perm()))",
        "tmpfs mode without the sticky/setuid bits: 1023 (0o1777) -> 511 (0o777)",
        _service_tmpfs_mode,
    ),
    Rule(
        "service-short-durations",
        SERVICE,
        f"{STRUCT} shortDur (flattenServiceHealthcheck, flattenContainerSpec, "
        "flattenTaskRestartPolicy, flattenServiceUpdateOrRollbackConfig)",
        'durations shortened: "1m0s" -> "1m", "1h0m0s" -> "1h"',
        _service_durations,
    ),
    Rule(
        "service-env-map",
        SERVICE,
        f"{STRUCT} flattenContainerSpec (mapStringSliceToMap); sent by createContainerSpec "
        "(mapTypeMapValsToStringSlice, Go map order)",
        "env reads back as a map (no order); an update re-sends it in Go map order, which Swarm "
        "takes as a new task spec and rolls the tasks",
        _service_env_map,
    ),
    Rule(
        "service-mounts-set",
        SERVICE,
        f"{STRUCT} flattenServiceMounts (schema.Set)",
        "mounts are a set: order is not a change",
        _service_mounts_set,
    ),
)

# Schema defaults the engine sees when an input is left unset (the diff compares them).
DEFAULTS: Mapping[str, Mapping[str, Any]] = {CONTAINER: {"mustRun": True}}


def rules_for(resource_type: str) -> list[Rule]:
    return [rule for rule in RULES if rule.resource_type == resource_type]


def _sent(resource_type: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The inputs as the engine holds them: unset values dropped, schema defaults filled, sets
    and maps in a canonical order (order is not a change for them)."""
    sent = {k: copy.deepcopy(v) for k, v in inputs.items() if v is not None}
    for key, default in DEFAULTS.get(resource_type, {}).items():
        sent.setdefault(key, default)
    for rule in rules_for(resource_type):
        if rule.name in ("container-envs-set", "service-env-map", "service-mounts-set"):
            rule.apply(sent, Observed())
    return sent


def read_back(
    resource_type: str, inputs: Mapping[str, Any], observed: Observed | None = None
) -> dict[str, Any]:
    """The state the provider's Read writes for these inputs, rule by rule."""
    state = _sent(resource_type, inputs)
    for rule in rules_for(resource_type):
        rule.apply(state, observed or Observed())
    return state


# Computed by the provider, never sent: not part of the diff.
COMPUTED = frozenset({"exitCode", "containerLogs", "networkDatas", "bridge"})


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
    new = property_digests(_sent(resource_type, inputs))
    return sorted(key for key in set(new) | set(recorded) if new.get(key) != recorded.get(key))
