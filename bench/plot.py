"""A sitting of `make bench` as a picture: the tutorial and ours, dev and prod, each with its ratio.

    uv run --group bench python -m bench.plot bench/results/bench-2026-12-07-1549.json

`make bench` draws its own sitting (bench/results/bench.png, beside bench.json); given a sitting's
JSON, this draws that one next to it (the same name, `.png`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

# What each panel shows: the sitting's key, its label and unit, the target ratio.
PANELS = (
    ("post", "POST /process", "requests/s", 2.0),
    ("get", "GET /task/{id} (finished job)", "requests/s", 3.0),
    ("drain", "drain, 1 worker x 4 each", "jobs/s", 1.5),
)
TUTORIAL_KEYS = {"post": "post_rps", "get": "get_rps", "drain": "drain_jobs_per_s"}
COLOURS = {"tutorial": "#9e9e9e", "dev": "#4e79a7", "prod": "#f28e2b"}


def figures(results: dict[str, Any], key: str) -> list[tuple[str, float, float | None]]:
    """(who, rate, ratio to the tutorial) for the tutorial, then each of our stacks measured."""
    tutorial = float(results["tutorial"][TUTORIAL_KEYS[key]])
    bars: list[tuple[str, float, float | None]] = [("tutorial", tutorial, None)]
    for kind in ("dev", "prod"):
        if kind not in results:
            continue
        measured = results[kind][key]
        rate = measured["jobs_per_second" if key == "drain" else "requests_per_second"]
        bars.append((kind, float(rate), float(rate) / tutorial))
    return bars


def draw(results: dict[str, Any], path: Path) -> Path:
    """Write the sitting's plot to `path` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")  # no screen: a file only
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(PANELS), figsize=(12, 4.2), layout="constrained")
    for axis, (key, title, unit, target) in zip(axes, PANELS, strict=True):
        bars = figures(results, key)
        names = [name for name, _, _ in bars]
        rates = [rate for _, rate, _ in bars]
        drawn = axis.bar(names, rates, color=[COLOURS[name] for name in names])
        for bar, (_, rate, ratio) in zip(drawn, bars, strict=True):
            label = f"{rate:,.0f}" if ratio is None else f"{rate:,.0f}\n{ratio:.2f}x"
            axis.annotate(
                label,
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=9,
            )
        axis.axhline(
            rates[0] * target, color="#c0392b", linestyle="--", linewidth=1, label=f"{target}x"
        )
        axis.set_title(title, fontsize=10)
        axis.set_ylabel(unit)
        axis.set_ylim(0, max(*rates, rates[0] * target) * 1.25)
        axis.legend(loc="upper left", fontsize=8, frameon=False, title="target", title_fontsize=8)
        axis.spines[["top", "right"]].set_visible(False)
    started = str(results.get("started_at", results.get("date", "")))[:16].replace("T", " ")
    figure.suptitle(f"make bench, {started} UTC: the tutorial's stack and ours, same sitting")
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sitting", type=Path, help="a sitting's JSON (bench/results/bench-*.json)")
    args = parser.parse_args()
    print(draw(json.loads(args.sitting.read_text()), args.sitting.with_suffix(".png")))


if __name__ == "__main__":
    main()
