"""New-image deploys in a row under a CPU hog, as RELIABILITY.md's "Deploying a new image" table
measures them: for each, the requests that failed and the accepted jobs not finished within the
bound after the deploy ended (deploy/probe.py). Never part of the tests.

    python -m bench.deploys --stack prod --runs 20     # the docker target
    python -m bench.deploys --stack swarm --runs 20 \
        --config workerReplicas=3 --config workerConcurrency=4 --config appEnv=[]
                                                       # a single-node swarm, prod's workers

The hog is one busy loop per core at the lowest priority (nice 19), as other work on a shared
machine would be. Writes bench/results/deploys-<stack>-<date>.json and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from deploy import deployer
from deploy.probe import FINISHED_AFTER_DEPLOY_SECONDS, deploy_new_image_under_probe
from deploy.stack import DeployedStack, SwarmStack
from infra.spec import APP_ROLES

RESULTS = Path(__file__).resolve().parent / "results"


@contextmanager
def cpu_hog() -> Iterator[None]:
    """One busy loop per core, at nice 19, while the block runs."""
    loops = [
        subprocess.Popen(["nice", "-n", "19", sys.executable, "-c", "while True: pass"])
        for _ in range(os.cpu_count() or 1)
    ]
    try:
        yield
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()


def run(
    stack: DeployedStack, runs: int, settle: Callable[[], object] | None
) -> list[dict[str, Any]]:
    rows = []
    for number in range(1, runs + 1):
        report = deploy_new_image_under_probe(stack, settle)
        row = {
            "run": number,
            "up_seconds": report["up_seconds"],
            "requests": report["gets"] + report["posts"],
            "failed_requests": report["failed_requests"],
            "jobs_accepted": report["jobs_accepted"],
            "late_jobs": len(report["late_jobs"]),
            "jobs": report["jobs"],
            "late": report["late_jobs"],
        }
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "late"}), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", choices=("dev", "prod", "swarm"), default="prod")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--no-hog", action="store_true", help="without the CPU hog")
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a stack config key for every up (as `pulumi config set`)",
    )
    arguments = parser.parse_args()
    config = dict(item.split("=", 1) for item in arguments.config)
    stack: DeployedStack = (
        SwarmStack(deployer("swarm"), overrides=config)
        if arguments.stack == "swarm"
        else DeployedStack(deployer(arguments.stack), overrides=config)
    )
    settle = (
        (lambda: stack.wait_rollouts_settled((*APP_ROLES, "proxy")))
        if isinstance(stack, SwarmStack)
        else None
    )
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    stack.down(volumes=True)
    try:
        stack.up()
        if arguments.no_hog:
            rows = run(stack, arguments.runs, settle)
        else:
            with cpu_hog():
                rows = run(stack, arguments.runs, settle)
    finally:
        stack.down(volumes=True)
    result = {
        "what": f"{arguments.runs} new-image deploys in a row on the rehearsed {arguments.stack} "
        "stack under the probe (deploy/probe.py)"
        + ("" if arguments.no_hog else ", a busy loop per core at nice 19 beside them"),
        "bound": f"every accepted job finished {FINISHED_AFTER_DEPLOY_SECONDS:.0f} s + its run "
        "time after the deploy ended",
        "when": started,
        "machine": f"{os.cpu_count()} vCPUs, {os.uname().machine}, Docker on the same host",
        "command": f"python -m bench.deploys --stack {arguments.stack} --runs {arguments.runs}"
        + "".join(f" --config {item}" for item in arguments.config),
        "config": config,
        "totals": {
            "failed_requests": sum(r["failed_requests"] for r in rows),
            "late_jobs": sum(r["late_jobs"] for r in rows),
            "jobs_accepted": sum(r["jobs_accepted"] for r in rows),
            "requests": sum(r["requests"] for r in rows),
        },
        "runs": rows,
    }
    name = f"deploys-{arguments.stack}-{time.strftime('%Y-%m-%d-%H%M', time.gmtime())}.json"
    (RESULTS / name).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["totals"]))


if __name__ == "__main__":
    main()
