"""python -m rehearsal up|down --stack STACK [--config k=v] [--secret k=v]; python -m rehearsal
check [--chromium]: what this machine lacks for a rehearsal."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from rehearsal.check import missing_prerequisites, report
from rehearsal.engine import use_host
from rehearsal.stack import UpResult, down, up
from rehearsal.stack_config import load_stack_config

OPTIONS: list[tuple[str, dict[str, Any]]] = [
    ("--stack", {"default": "dev", "help": "stack whose Pulumi.<stack>.yaml is used"}),
    ("--name", {"help": "stack name the program sees (default: rehearsal-STACK)"}),
    ("--config", {"help": "as `pulumi config set KEY VALUE` (no namespace: the project's)"}),
    ("--secret", {"help": "as `pulumi config set --secret KEY VALUE`"}),
    (
        "--node-label",
        {
            "help": "up: a label the swarm's nodes must carry, put on this engine's node "
            "unless a node has it (default: the items of the stack's *NodeLabels keys)"
        },
    ),
    ("--volumes", {"action": "store_true", "help": "down: delete named volumes too"}),
    ("--outputs-json", {"type": Path, "help": "up: write the non-secret outputs to this file"}),
    ("--chromium", {"action": "store_true", "help": "check: also Chromium (the e2e tests)"}),
]
REPEATED: dict[str, Any] = {"action": "append", "default": [], "metavar": "KEY=VALUE"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rehearsal", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "check"])
    for flag, options in OPTIONS:
        repeated = REPEATED if flag in ("--config", "--secret", "--node-label") else {}
        parser.add_argument(flag, **repeated, **options)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check":
        missing = missing_prerequisites(chromium=args.chromium)
        if missing:
            print(report(missing), file=sys.stderr)
        return 1 if missing else 0
    # A failed registration also surfaces as "Future exception was never retrieved" on the asyncio
    # logger; the error itself is reported once, below.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    name = args.name or f"rehearsal-{args.stack}"
    started = time.monotonic()
    try:
        config = load_stack_config(
            args.stack, args.config, secret_overrides=args.secret, secrets_name=name
        )
        # The engine the provider talks to: `docker:host`, else DOCKER_HOST, else the local socket.
        use_host(config.values)
        if args.command == "down":
            down(name, volumes=args.volumes)
            print(f"rehearsal {name}: down in {time.monotonic() - started:.0f}s")
            return 0
        labels = dict(label.partition("=")[::2] for label in args.node_label)
        result = up(name, config, node_labels=labels or None)
    except Exception as error:  # the program's own errors (a failed migration gate) included
        print(f"rehearsal {name}: {args.command} failed: {error}", file=sys.stderr)
        return 1
    print(f"rehearsal {name}: up in {time.monotonic() - started:.0f}s")
    _report(result, args.outputs_json)
    return 0


def _report(result: UpResult, outputs_json: Path | None) -> None:
    # The engine's summary: what the diff against the read-back state made it do.
    print(f"  changes: {len(result.changes)}")
    for change in result.changes:
        detail = f" ({', '.join(change.properties)})" if change.properties else ""
        print(f"    {change.op} {change.urn}{detail}")
    # Secret outputs (connection strings) are left out.
    shown = {k: v for k, v in result.outputs.items() if k not in result.secret_outputs}
    if outputs_json:
        outputs_json.parent.mkdir(parents=True, exist_ok=True)
        outputs_json.write_text(json.dumps(shown, indent=2, sort_keys=True))
    for key, value in sorted(shown.items()):
        if isinstance(value, str) and value.startswith(("http://", "https://")):
            print(f"  {key}: {value}")


if __name__ == "__main__":
    sys.exit(main())
