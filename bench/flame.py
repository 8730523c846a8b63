"""Summarise a py-spy `--format raw` (collapsed stacks) profile: the frames that cost the most.

python -m bench.flame profile.raw [--top 25]
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path


def summarise(path: Path, top: int) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """Total samples, the top frames by inclusive samples and by self samples."""
    inclusive: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        for frame in set(frames):
            inclusive[frame] += count
        self_time[frames[-1]] += count
    return total, inclusive.most_common(top), self_time.most_common(top)


def render(path: Path, top: int) -> str:
    total, inclusive, self_time = summarise(path, top)
    lines = [f"{total} samples in {path.name}", "", "inclusive:"]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in inclusive]
    lines += ["", "self:"]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in self_time]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    print(render(args.profile, args.top))


if __name__ == "__main__":
    main()
