"""What each stack registers, as sorted JSON: a refactoring of `infra/` must leave it unchanged.

    python -m tests.infra.snapshot dump DIR           # one <stack>.json per stack into DIR
    python -m tests.infra.snapshot compare OLD NEW    # what differs, resource by resource

The program runs under the unit tests' mocks (`tests/infra/pulumi_mocks.py`) for each stack below.
Every RegisterResource request (and ReadResource: the stack reference) is kept as the engine
receives it: type, name, parent, inputs (a secret shown as `{"secret": value}`), dependencies,
property dependencies, aliases and the other resource options; the components' registered outputs
and the stack outputs too. Only what names
the program's own source lines (source position, stack trace) is left out. The migration's run
token (random per `up`) is fixed, so that two runs compare.
"""

from __future__ import annotations

import difflib
import json
import secrets
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

from google.protobuf.json_format import MessageToDict  # type: ignore[import-untyped]
from pulumi.runtime import rpc

from rehearsal import runner
from tests.infra.pulumi_mocks import is_secret
from tests.infra.stacks import PROD_SECRETS, TLS_SECRETS, stack_file_config

# name -> (stack file, overrides, with the prod credentials, with TLS)
STACKS: Mapping[str, tuple[str, Mapping[str, str], bool, bool]] = {
    "dev": ("dev", {}, False, False),
    "prod": ("prod", {}, True, False),
    "swarm": ("dev", {"target": "swarm"}, False, False),
    # Beyond the three: the branches a credential or TLS opens.
    "prod-tls": ("prod", {}, True, True),
    "swarm-prod": ("prod", {"target": "swarm", "backupRepository": "repository-host"}, True, False),
}
# Request fields that name the program's source, not what it registers.
_SOURCE_FIELDS = ("sourcePosition", "stackTrace", "parentStackTraceHandle")


def _plain(value: Any) -> Any:
    if is_secret(value):
        return {"secret": _plain(value["value"])}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _sorted_lists(request: dict[str, Any]) -> dict[str, Any]:
    # Dependencies are sets on the wire: the SDK sends them in whatever order they resolved.
    for key in ("dependencies", "aliasURNs"):
        if key in request:
            request[key] = sorted(request[key])
    for deps in request.get("propertyDependencies", {}).values():
        deps["urns"] = sorted(deps.get("urns", []))
    return request


class _Recorder:
    def __init__(self) -> None:
        self.resources: dict[str, dict[str, Any]] = {}
        self.outputs: dict[str, Any] = {}

    def monitor(self) -> type[runner.RecordingMonitor]:
        recorder = self

        class SnapshotMonitor(runner.RecordingMonitor):
            def RegisterResource(self, request: Any) -> Any:
                response = super().RegisterResource(request)
                if request.type != "pulumi:pulumi:Stack":
                    entry = MessageToDict(request)
                    for name in (*_SOURCE_FIELDS, "object"):
                        entry.pop(name, None)
                    entry["inputs"] = _plain(rpc.deserialize_properties(request.object))
                    recorder.resources[response.urn] = _sorted_lists(entry)
                return response

            def ReadResource(self, request: Any) -> Any:
                response = super().ReadResource(request)  # type: ignore[no-untyped-call]
                entry = MessageToDict(request)
                for name in (*_SOURCE_FIELDS, "properties"):
                    entry.pop(name, None)
                entry["inputs"] = _plain(rpc.deserialize_properties(request.properties))
                recorder.resources[response.urn] = _sorted_lists(entry)
                return response

            def RegisterResourceOutputs(self, request: Any) -> Any:
                recorder.outputs[request.urn] = _plain(rpc.deserialize_properties(request.outputs))
                return super().RegisterResourceOutputs(request)

        return SnapshotMonitor


@contextmanager
def _fixed_token() -> Iterator[None]:
    with mock.patch.object(secrets, "token_hex", lambda n=None: "0" * 2 * (n or 32)):
        yield


def snapshot(name: str) -> dict[str, Any]:
    """Everything stack `name` (a key of STACKS) registers, by URN."""
    from tests.infra.pulumi_mocks import run_program

    stack, overrides, prod_secrets, tls = STACKS[name]
    credentials = {**(PROD_SECRETS if prod_secrets else {}), **(TLS_SECRETS if tls else {})}
    recorder = _Recorder()
    with mock.patch.object(runner, "RecordingMonitor", recorder.monitor()), _fixed_token():
        run_program(
            {**stack_file_config(stack), **overrides}, stack=stack, secrets=credentials or None
        )
    return {"resources": recorder.resources, "outputs": recorder.outputs}


def dump(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name in STACKS:
        text = json.dumps(snapshot(name), indent=1, sort_keys=True)
        (directory / f"{name}.json").write_text(text + "\n")
        print(f"{name}: {len(json.loads(text)['resources'])} resources")


def _differences(old: Any, new: Any, path: str = "") -> Iterator[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(old.keys() | new.keys()):
            if key not in new:
                yield f"{path}/{key}: removed ({json.dumps(old[key])[:200]})"
            elif key not in old:
                yield f"{path}/{key}: added ({json.dumps(new[key])[:200]})"
            else:
                yield from _differences(old[key], new[key], f"{path}/{key}")
    elif isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for index, (before, after) in enumerate(zip(old, new, strict=True)):
            yield from _differences(before, after, f"{path}[{index}]")
    elif isinstance(old, str) and isinstance(new, str) and old != new and "\n" in old + new:
        # A rendered file (the proxy's configuration): the lines that differ.
        lines = difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=0)
        changed = [line for line in lines if line[:1] in "+-" and line[:3] not in ("+++", "---")]
        yield f"{path}: text differs\n" + "\n".join(f"      {line}" for line in changed)
    elif old != new:
        yield f"{path}: {json.dumps(old)[:200]} -> {json.dumps(new)[:200]}"


def compare(old_dir: Path, new_dir: Path) -> int:
    """Print every difference; the number of them."""
    count = 0
    for name in STACKS:
        old = json.loads((old_dir / f"{name}.json").read_text())
        new = json.loads((new_dir / f"{name}.json").read_text())
        lines = list(_differences(old, new))
        print(f"== {name}: {len(lines)} difference(s)")
        for line in lines:
            print(f"  {line}")
        count += len(lines)
    return count


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "dump":
        dump(Path(argv[1]))
        return 0
    if len(argv) == 3 and argv[0] == "compare":
        return 1 if compare(Path(argv[1]), Path(argv[2])) else 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
