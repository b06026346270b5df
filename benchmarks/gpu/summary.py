"""Summary of a GPU run: the ceilings, every benchmark group with its anchor ratio, and the
issue's targets checked (H100: preprocess <= 10 us per 1080p frame at batch 1 and >= 70 % of
the measured DRAM bandwidth at batch 16, >= 5x torch; postprocess <= 50 us at conf 0.25 and
<= 1 ms at mAP settings per image, >= 10x torch + torchvision).

    python3 benchmarks/gpu/summary.py OUT_DIR > OUT_DIR/summary.md
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any


def load(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def us(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e6:,.1f}"


def last_line(path: Path, pattern: str) -> str:
    """The last line of a log matching pattern ('-' when the log or the line is missing)."""
    try:
        lines = [
            ln for ln in path.read_text(errors="replace").splitlines() if re.search(pattern, ln)
        ]
    except OSError:
        return "- (no log)"
    return lines[-1].strip() if lines else "- (not found)"


def checks(out: Path) -> None:
    """The test and sanitizer verdicts, from their logs."""
    print("## Tests and sanitizers\n")
    print("| check | result |\n|---|---|")
    print(f"| pytest (CUDA + CPU op tests) | {last_line(out / 'tests.log', r' in [0-9.]+s')} |")
    for tool in ("memcheck", "racecheck"):
        log = out / f"{tool}.log"
        print(f"| {tool} pytest | {last_line(log, r' in [0-9.]+s')} |")
        print(f"| {tool} | {last_line(log, r'(ERROR|RACECHECK) SUMMARY')} |")
    print()


def detector(out: Path) -> None:
    """Detector(device="cuda") against the CPU Detector, its added time, its memory."""
    parity = (load(out / "parity.json") or {}).get("parity", [])
    if parity:
        print("## Detector(device='cuda') vs Detector(device='cpu'), torch fp32, coco-mini\n")
        print(
            "| model | images | rows cpu / gpu | rows matched | images identical | "
            "max box diff px | max score diff | lowest unmatched scores |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for p in parity:
            if "error" in p:
                print(f"| error | {p['error'].splitlines()[-1]} |")
                continue
            print(
                f"| {p['model']} | {p['images']} | {p['rows cpu']} / {p['rows gpu']} | "
                f"{p['rows matched']} | {p['images identical']} | "
                f"{p['max box diff px (matched)']:.2e} | {p['max score diff (matched)']:.2e} | "
                f"{[round(x, 4) for x in p['unmatched scores (lowest 20)'][:6]]} |"
            )
        print()
    report = load(out / "detector.json") or {}
    timing = report.get("timing", [])
    if timing:
        print("## Detector end to end against the engine alone (batch 1)\n")
        print(
            "| model | precision | engine ms | added ms: photo / 1080p / 1080p on GPU | "
            "pipelined fps 1080p (numpy / GPU) | throughput ratio (numpy / GPU) | stages p50 ms |"
        )
        print("|---|---|---|---|---|---|---|")
        for t in timing:
            if "error" in t:
                print(f"| error | {t['error'].splitlines()[-1]} |")
                continue
            stages = ", ".join(f"{k} {v:.3f}" for k, v in t["profile ms p50"].items())
            print(
                f"| {t['model']} | {t['precision']} | {t['engine alone ms']:.3f} | "
                f"{t['added ms (photo)']:.3f} / {t['added ms (1080p)']:.3f} / "
                f"{t['added ms (1080p gpu)']:.3f} | "
                f"{t['pipelined fps (1080p, 64 frames)']:.0f} / "
                f"{t['pipelined fps (1080p gpu, 64 frames)']:.0f} | "
                f"{t['throughput ratio (1080p)']:.2f} / {t['throughput ratio (1080p gpu)']:.2f} | "
                f"{stages} |"
            )
        print()
        print("| target (issue 10) | measured | verdict |\n|---|---|---|")
        for t in timing:
            if "error" in t:
                continue
            name = f"{t['model']} {t['precision']}"
            for label in ("photo", "1080p", "1080p gpu"):
                added = t[f"added ms ({label})"]
                verdict = "PASS" if added <= 0.2 else "FAIL"
                print(
                    f"| {name}: end to end <= engine + 0.2 ms ({label}) | "
                    f"+{added:.3f} ms | {verdict} |"
                )
            for label in ("1080p", "1080p gpu"):
                ratio = t[f"throughput ratio ({label})"]
                verdict = "PASS" if ratio >= 0.95 else "FAIL"
                print(
                    f"| {name}: pipelined >= 95 % of engine throughput ({label}) | "
                    f"{ratio:.0%} | {verdict} |"
                )
        print()
    memory = report.get("memory")
    if memory and "samples" in memory:
        print(f"## GPU memory over {memory['calls']} Detector calls ({memory['model']})\n")
        print("| call | device used MiB | torch allocated MiB | max RSS MiB |\n|---|---|---|---|")
        for m in memory["samples"]:
            print(
                f"| {m['call']} | {m['device used MiB']:.1f} | {m['torch allocated MiB']:.1f} | "
                f"{m['max rss MiB']:.0f} |"
            )
        growth = memory["device growth MiB (100 -> last)"]
        verdict = "flat" if memory["flat"] else "GROWS"
        print(f"\nGrowth after call 100: {growth:.1f} MiB: {verdict}\n")
    elif memory:
        print(f"## GPU memory\n\nerror: {memory.get('error', '').splitlines()[-1:]}\n")


def main() -> None:
    out = Path(sys.argv[1])
    ceilings = load(out / "ceilings.json") or {}
    bench = load(out / "bench_gpu.json") or {"benchmarks": [], "machine_info": {}}
    print("# fastdet GPU run\n")
    if ceilings:
        print(
            f"GPU: {ceilings.get('gpu')} ({ceilings.get('multiprocessors')} SMs), "
            f"torch {ceilings.get('torch')}, CUDA {ceilings.get('cuda')}\n"
        )
        print("| ceiling | measured |\n|---|---|")
        print(
            f"| device-to-device copy (read + write) | {ceilings['d2d_bandwidth_gbs']:.0f} GB/s |"
        )
        print(f"| pinned host-to-device | {ceilings['h2d_pinned_gbs']:.1f} GB/s |")
        print(f"| pageable host-to-device | {ceilings['h2d_pageable_gbs']:.1f} GB/s |\n")
    checks(out)
    detector(out)
    groups: dict[str, list[dict[str, Any]]] = {}
    for b in bench["benchmarks"]:
        groups.setdefault(b["group"], []).append(b)

    def case(group: str, name: str) -> dict[str, Any] | None:
        for b in groups.get(group, []):
            if b["extra_info"].get("case") == name:
                return b
        return None

    for group, rows in groups.items():
        anchors = [r for r in rows if not r["extra_info"].get("case", "").startswith("fastdet")]
        anchor = min(anchors, key=lambda r: r["stats"]["median"]) if anchors else None
        print(f"## {group}\n")
        print("| case | median wall us | device us | anchor / case (wall) | notes |")
        print("|---|---|---|---|---|")
        for r in sorted(rows, key=lambda r: r["stats"]["median"]):
            info = r["extra_info"]
            device = info.get("device_us")
            ratio = anchor["stats"]["median"] / r["stats"]["median"] if anchor else None
            notes = {k: v for k, v in info.items() if k not in ("case", "device_us", "batch")}
            print(
                f"| {info.get('case')} | {us(r['stats']['median'])} | "
                f"{'-' if device is None else f'{device:,.1f}'} | "
                f"{'-' if ratio is None else f'{ratio:.1f}x'} | {notes} |"
            )
        print()

    print("## Targets\n")
    print("| target | measured | verdict |\n|---|---|---|")

    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("PASS" if ok else "FAIL")

    pre1 = "preprocess 1080p -> 640 letterbox fp16, batch 1"
    pre16 = "preprocess 1080p -> 640 letterbox fp16, batch 16"
    ours1 = case(pre1, "fastdet from GPU frames")
    if ours1:
        d = ours1["extra_info"].get("device_us")
        print(
            f"| preprocess batch 1 <= 10 us per frame (GPU time) | {d:.1f} us | "
            f"{verdict(d is not None and d <= 10)} |"
        )
    ours16 = case(pre16, "fastdet from GPU frames")
    if ours16 and ceilings:
        d = ours16["extra_info"]["device_us"]
        gbs = ours16["extra_info"]["bytes"] / (d * 1e-6) / 1e9
        share = gbs / ceilings["d2d_bandwidth_gbs"]
        print(
            f"| preprocess batch 16 >= 70 % of DRAM bandwidth | {gbs:.0f} GB/s = {share:.0%} "
            f"({d / 16:.2f} us per frame) | {verdict(share >= 0.7)} |"
        )
    for group, batch in ((pre1, 1), (pre16, 16)):
        ours, theirs = case(group, "fastdet from GPU frames"), case(group, "torch from GPU frames")
        if ours and theirs:
            dev = theirs["extra_info"]["device_us"] / ours["extra_info"]["device_us"]
            wall = theirs["stats"]["median"] / ours["stats"]["median"]
            print(
                f"| preprocess batch {batch} >= 5x torch | GPU time {dev:.1f}x, wall {wall:.1f}x | "
                f"{verdict(dev >= 5)} |"
            )
        ours, theirs = (
            case(group, "fastdet from host frames"),
            case(group, "torch from pinned host frames"),
        )
        if ours and theirs:
            wall = theirs["stats"]["median"] / ours["stats"]["median"]
            print(
                f"| preprocess batch {batch} from host frames vs torch (pinned) "
                f"| wall {wall:.1f}x | info |"
            )
    for batch in (1, 16):
        for setting, limit in (("detect conf 0.25", 50e-6), ("mAP conf 0.001", 1e-3)):
            group = f"postprocess yolov7 [{batch}, 25200, 85], {setting}"
            ours, theirs = case(group, "fastdet"), case(group, "torch + torchvision batched_nms")
            if ours:
                per_image = ours["stats"]["median"] / batch
                print(
                    f"| yolov7 {setting} batch {batch}: <= {limit * 1e6:.0f} us per image | "
                    f"{us(per_image)} us wall per image | {verdict(per_image <= limit)} |"
                )
            if ours and theirs:
                ratio = theirs["stats"]["median"] / ours["stats"]["median"]
                print(
                    f"| yolov7 {setting} batch {batch}: >= 10x torch + torchvision | "
                    f"{ratio:.1f}x | {verdict(ratio >= 10)} |"
                )
        group = f"postprocess damo [{batch}, 8400, 80] + [{batch}, 8400, 4], conf 0.05"
        ours, theirs = case(group, "fastdet"), case(group, "torch + torchvision batched_nms")
        if ours and theirs:
            ratio = theirs["stats"]["median"] / ours["stats"]["median"]
            print(
                f"| damo batch {batch}: >= 10x torch + torchvision | {ratio:.1f}x "
                f"({us(ours['stats']['median'] / batch)} us per image) | {verdict(ratio >= 10)} |"
            )
    for n in ("1k", "30k"):
        group = f"nms 80 classes, {n} clustered boxes, iou 0.45"
        ours, theirs = case(group, "fastdet"), case(group, "torchvision batched_nms")
        if ours and theirs:
            ratio = theirs["stats"]["median"] / ours["stats"]["median"]
            print(
                f"| nms {n} vs torchvision batched_nms | {us(ours['stats']['median'])} us, "
                f"{ratio:.1f}x | info |"
            )
    info = bench.get("machine_info", {})
    print(
        f"\nmachine: {info.get('node')} {info.get('cpu', {}).get('brand_raw', '')}; "
        f"fastdet {info.get('fastdet', {})}"
    )


if __name__ == "__main__":
    main()
