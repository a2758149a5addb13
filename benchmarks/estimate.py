"""Latency of the VRAM estimator per call (the TUI recomputes it on every keystroke; the goal is < 1 ms).

    python benchmarks/estimate.py [--calls 2000] [--record docs/benchmarks.md]

Each figure is the median of 5 rounds of `calls` calls for one config, suggestions included (each
suggestion is one more estimate of a changed plan). --record updates this benchmark's rows in the table
(or adds them), leaving other rows and the text around the table alone.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

from tui_trainer.config import config_from_dict, config_to_dict, load_preset
from tui_trainer.estimate import estimate

BUDGET_MS = 1.0
HEADER = "| figure | value | reference | ratio | goal | machine |\n|---|---|---|---|---|---|\n"
PREFIX = "estimate: "


def configs() -> dict[str, object]:
    """The configs timed: shipped presets plus a worst case with every suggestion applicable."""
    worst = config_to_dict(load_preset("sdxl-lora"))
    worst["training"].update(gradient_checkpointing=False, cache_latents=False, cache_text_encoder_outputs=False,
                             batch_size=4, attention="eager")
    worst["parts"]["text_encoder"] = {**worst["parts"]["text_encoder"], "train": True}
    worst["samples"] = [{"prompt": "a dog"}]
    worst["sampling"] = {"every": 1}
    return {
        "sd15-lora preset": load_preset("sd15-lora"),
        "sdxl-lora preset": load_preset("sdxl-lora"),
        "sdxl-finetune preset": load_preset("sdxl-finetune"),
        "flux1-dev-lora preset (nf4)": load_preset("flux1-dev-lora"),
        "qwen-image-lora preset (nf4)": load_preset("qwen-image-lora"),
        "sdxl LoRA, every suggestion applicable": config_from_dict(worst),
    }


def per_call_ms(config, calls: int, rounds: int = 5) -> float:
    """Median over rounds of the mean milliseconds per estimate() call."""
    estimate(config)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            estimate(config)
        times.append((time.perf_counter() - start) / calls * 1000)
    return statistics.median(times)


def machine() -> str:
    """Short description of this machine."""
    import os

    return f"{platform.machine()} {os.cpu_count()} cpu, Python {platform.python_version()}"


def record(path: Path, rows: list[str]) -> None:
    """Replace this benchmark's rows in the table (or add them after its last row); create the file if missing."""
    text = path.read_text() if path.exists() else "# Benchmarks\n\n" + HEADER
    lines = text.splitlines()
    kept = [line for line in lines if not line.startswith(f"| {PREFIX}")]
    table_end = max((i for i, line in enumerate(kept) if line.startswith("|")), default=len(kept) - 1)
    kept[table_end + 1:table_end + 1] = rows
    path.write_text("\n".join(kept) + "\n")
    print(f"recorded in {path}", file=sys.stderr)


def table_rows(calls: int) -> list[str]:
    """Time every config in configs(); print and return its Markdown rows."""
    when = time.strftime("%Y-%m-%d")
    rows = []
    for name, config in configs().items():
        ms = per_call_ms(config, calls)
        suggestions = len(estimate(config).suggestions)
        print(f"{name}: {ms:.3f} ms per call ({suggestions} suggestions)")
        rows.append(f"| {PREFIX}per call, {name}, {suggestions} suggestions ({when}) | {ms:.3f} ms | "
                    f"{BUDGET_MS:g} ms keystroke budget | {ms / BUDGET_MS:.2f} | <= 1.0 | {machine()} |")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--record", type=Path, help="record the figures in this Markdown file (docs/benchmarks.md)")
    args = parser.parse_args()
    rows = table_rows(args.calls)
    if args.record:
        record(args.record, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
