"""What monitoring and archiving cost the prod stack, alone: `make bench`'s last part.

    uv run --group bench python -m bench.costs          # AB_ROUNDS rounds, 5 by default

Brings up the bench's prod stack, runs `costs_ab` (docs/bench.md, "What monitoring and archiving
cost") and takes it down; writes bench/results/costs-ab-<date>-<time>.json and prints the table.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime

from bench.run import AB_ROUNDS, RESULTS, Stack, costs_ab, costs_table, log, machine


def main() -> int:
    started = datetime.now(UTC)
    stack = Stack("prod")
    stack.down()  # a leftover of an interrupted run
    try:
        stack.up()
        measured = costs_ab(stack)
    finally:
        stack.down()
    results = {
        "date": started.strftime("%Y-%m-%d"),
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": f"AB_ROUNDS={AB_ROUNDS} python -m bench.costs",
        "machine": machine(),
        "prod": {"costs_ab": measured},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"costs-ab-{started.strftime('%Y-%m-%d-%H%M')}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(costs_table(results))
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
