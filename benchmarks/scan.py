"""Scan speed: cold (no cache) and warm (cached) concept scans against imagesize and os.stat loops.

    python benchmarks/scan.py [--images 10000] [--record docs/benchmarks.md]

Builds small PNGs with .txt captions in a temp folder (the scan lists the captions but never reads them) and
dates them a minute back (a dataset that has not changed for RACY_WINDOW_NS; fresher files are re-read on
purpose). Then times, and keeps each figure's best of --repeat interleaved rounds (each round runs every figure
once, so a change in the machine's load hits all figures alike; the garbage collector is reset before each
run): an `os.stat` loop over the images and an `imagesize.get` loop (references); a cold scan (empty cache
dir); a warm scan that loads the cache file from disk (a new process); a warm scan whose result is remembered
in memory (what the TUI's repeated rescans see); a whole warm `build_report`. Goals (issue 3): cold >= 1.0 x
the imagesize loop, warm >= 0.5 x the os.stat loop.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import imagesize

from tui_trainer.config import config_from_dict
from tui_trainer.config.schema import ConceptConfig
from tui_trainer.data import build_report
from tui_trainer.data.scan import ScanCache, scan_concept
from tui_trainer.devkit.datasets import make_dataset

SIZES = ((32, 32), (40, 24), (24, 40), (48, 32))
STAT_LOOP = "os.stat loop over images"


def best_rates(images: int, repeat: int, runs: dict[str, Callable[[int], object]]) -> dict[str, float]:
    """Images per second of each run's fastest of `repeat` rounds; every round runs each once, in order (a run
    gets the round number). The garbage collector is reset before each run, untimed, so that no run pays for a
    collection of what an earlier one left."""
    best = dict.fromkeys(runs, float("inf"))
    for attempt in range(repeat):
        for name, run in runs.items():
            gc.collect()
            start = time.perf_counter()
            run(attempt)
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: images / seconds for name, seconds in best.items()}


def machine() -> str:
    return f"{platform.machine()} {os.cpu_count()} cpu, Python {platform.python_version()}"


def measure(images: int, repeat: int) -> tuple[int, list]:
    """Time the scans and their references; returns (image count, [(name, rate, reference, ratio, goal)])."""
    root = Path(tempfile.mkdtemp(prefix="tt-scan-bench-"))
    try:
        folder = root / "images"
        per_size = images // len(SIZES)
        make_dataset(folder, [(w, h, per_size) for w, h in SIZES])
        count = per_size * len(SIZES)
        paths = sorted(str(path) for path in folder.glob("*.png"))
        concept = ConceptConfig(name="bench", path=str(folder))

        def scan_with(cache_dir: Path) -> None:
            result = scan_concept(concept, folder, ScanCache.for_folder(cache_dir, str(folder)))
            assert len(result.images) == count and not result.skipped

        def cold(attempt: int) -> None:
            scan_with(root / f"cold-{attempt}")

        def warm_from_disk(attempt: int) -> None:
            ScanCache._loaded.clear()
            ScanCache._memos.clear()
            scan_with(root / "cold-0")

        config = config_from_dict({
            "model": {"base_model": "x"},
            "workspace": {"cache_dir": str(root / "cold-0")},
            "concepts": [{"name": "bench", "path": str(folder)}],
            "training": {"batch_size": 4},
        })

        when = time.time() - 60
        for path in [folder, *folder.iterdir()]:
            os.utime(path, (when, when))

        def warm_from_memory(_: int) -> None:
            scan_with(root / "cold-0")

        rates = best_rates(count, repeat, {
            "stat": lambda _: [os.stat(path) for path in paths],
            "imagesize": lambda _: [imagesize.get(path) for path in paths],
            "cold": cold,
            "warm from disk": warm_from_disk,
            "warm from memory": warm_from_memory,
            "report": lambda _: build_report(config),
        })
    finally:
        shutil.rmtree(root)

    stat_rate, imagesize_rate = rates["stat"], rates["imagesize"]
    return count, [
        ("os.stat loop over images (reference)", stat_rate, "", None, ""),
        ("imagesize.get loop (reference)", imagesize_rate, "", None, ""),
        ("cold scan (no cache)", rates["cold"], "imagesize.get loop", rates["cold"] / imagesize_rate, ">= 1.0"),
        ("warm scan (cache file from disk)", rates["warm from disk"], STAT_LOOP, rates["warm from disk"] / stat_rate, ">= 0.5"),
        ("warm scan (remembered in memory)", rates["warm from memory"], STAT_LOOP, rates["warm from memory"] / stat_rate, ">= 0.5"),
        ("warm build_report (scan + buckets)", rates["report"], STAT_LOOP, rates["report"] / stat_rate, ""),
    ]


def table_rows(count: int, rows: list) -> list[str]:
    """The measured rows as Markdown table rows."""
    when = time.strftime("%Y-%m-%d")
    return [f"| scan: {name}, {count} images ({when}) | {rate:,.0f} img/s | {reference} | "
            f"{'' if ratio is None else f'{ratio:.2f}'} | {goal} | {machine()} |"
            for name, rate, reference, ratio, goal in rows]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--record", help="append the figures to this Markdown file (docs/benchmarks.md)")
    args = parser.parse_args()

    count, rows = measure(args.images, args.repeat)
    print(f"{count} PNGs with .txt captions, best of {args.repeat} interleaved rounds; {machine()}")
    for name, rate, reference, ratio, goal in rows:
        ratio_text = f"{ratio:5.2f} x {reference}" if ratio is not None else ""
        print(f"  {name:<48} {rate:>10,.0f} img/s  {ratio_text}  {('goal ' + goal) if goal else ''}".rstrip())
    if args.record:
        record(Path(args.record), count, rows)
    return 0


def record(path: Path, count: int, rows: list) -> None:
    """Append the rows to a Markdown table (creating the file and its header when missing)."""
    header = "| figure | value | reference | ratio | goal | machine |\n|---|---|---|---|---|---|\n"
    text = path.read_text() if path.exists() else "# Benchmarks\n\n" + header
    if not text.endswith("\n"):
        text += "\n"
    text += "".join(row + "\n" for row in table_rows(count, rows))
    path.write_text(text)
    print(f"appended to {path}", file=sys.stderr)

if __name__ == "__main__":
    sys.exit(main())
