"""Prints a pytest-benchmark JSON (--benchmark-json) as per-group Markdown tables: each case's
median and the ratio anchor / fastdet (above 1: fastdet is faster by that factor). The ratio of
the minima is printed too: on a shared machine it is the one other processes disturb least.

    python3 benchmarks/report.py bench.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any


def _natural(text: str) -> list[Any]:
    """Sort key that orders "1k" < "5k" < "20k" and "1 thread" < "2 threads"."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _case(bench: dict[str, Any]) -> str:
    return str(bench.get("extra_info", {}).get("case") or bench["name"])


def _ms(seconds: float) -> str:
    ms = seconds * 1e3
    if ms >= 100:
        return f"{ms:.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    if ms >= 1:
        return f"{ms:.2f}"
    return f"{ms:.3f}"


def machine_lines(data: dict[str, Any]) -> list[str]:
    info = data.get("machine_info", {})
    commit = data.get("commit_info", {})
    cpu = info.get("cpu", {})
    fastdet = info.get("fastdet", {})
    lines = [
        f"- date: {data.get('datetime', '?')}",
        f"- cpu: {cpu.get('brand_raw', info.get('processor', '?'))}, {cpu.get('count', '?')} cores",
        f"- python: {info.get('python_implementation', '')} {info.get('python_version', '?')}",
        f"- numpy {info.get('numpy', '?')}, opencv {info.get('opencv', '?')}, "
        f"fastdet {fastdet.get('version', '?')} (CUDA build: {fastdet.get('with_cuda', '?')}), "
        f"default threads {fastdet.get('threads', '?')}",
        f"- commit: {commit.get('id', '?')}{' (dirty)' if commit.get('dirty') else ''}",
        f"- image: {info.get('image', '?')}",
        f"- malloc: {info.get('malloc', '?')}",
        f"- load average (1, 5, 15 min) at start: {info.get('load average at start', '?')}, "
        f"at end: {info.get('load average at end', '?')}",
        "- cores busy with other processes during the run (mean): "
        f"{info.get('other cores busy', '?')}",
    ]
    return lines


def group_tables(data: dict[str, Any]) -> list[str]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for bench in data.get("benchmarks", []):
        groups[bench.get("group") or "(no group)"].append(bench)
    lines: list[str] = []
    for group in sorted(groups, key=_natural):
        benches = sorted(groups[group], key=lambda b: b["stats"]["median"])
        fastdet = [b for b in benches if _case(b) == "fastdet"] or [
            b for b in benches if _case(b).startswith("fastdet")
        ]
        base = fastdet[0]["stats"] if fastdet else None
        header = ["case", "median ms", "min ms", "rounds", "ratio (median)", "ratio (min)"]
        lines.append(f"### {group}")
        lines.append("")
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
        for bench in benches:
            stats = bench["stats"]
            row = [_case(bench), _ms(stats["median"]), _ms(stats["min"]), str(stats["rounds"])]
            for key in ("median", "min"):
                row.append(f"{stats[key] / base[key]:.2f}" if base else "")
            lines.append("| " + " | ".join(row) + " |")
        workload: dict[str, Any] = {}
        for bench in benches:
            workload.update({k: v for k, v in bench.get("extra_info", {}).items() if k != "case"})
        if workload:
            lines.append("")
            lines.append("workload: " + ", ".join(f"{k} {v}" for k, v in sorted(workload.items())))
        lines.append("")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path, help="a file written by pytest --benchmark-json")
    args = parser.parse_args(argv)
    data = json.loads(args.json.read_text())
    print("\n".join(["## Machine", "", *machine_lines(data), "", "## Medians and ratios", ""]))
    print("\n".join(group_tables(data)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
