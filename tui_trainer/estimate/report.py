"""Text form of an Estimate (for `tui-trainer estimate`) and parsing of sizes like '24GiB'."""

from __future__ import annotations

import re

from tui_trainer.estimate.vram import OFFLOAD_COPY_BYTES_PER_S, Estimate
from tui_trainer.units import GIB

UNITS = {"": GIB, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
         "g": GIB, "gb": 1000**3, "gib": GIB, "t": 1024**4, "tb": 1000**4, "tib": 1024**4}
"""Size suffixes; a bare number or a bare 'G' means GiB, as GPUs are sold."""
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str) -> int:
    """Bytes of a size like '24GiB', '24GB', '24G', '11.5' (GiB) or '800MiB'; ValueError if malformed."""
    match = _SIZE.match(text)
    unit = match.group(2).lower() if match else ""
    if not match or unit not in UNITS:
        raise ValueError(f"{text!r} is not a size; use e.g. 24GiB, 24GB, 800MiB or 12 (GiB)")
    return round(float(match.group(1)) * UNITS[unit])


def gib(value: int) -> str:
    """Bytes as GiB with two decimals."""
    return f"{value / GIB:.2f} GiB"


def format_estimate(result: Estimate, title: str, gpu_message: str) -> str:
    """The estimate as the CLI prints it: breakdown, parts, phases, budget, suggestions, warnings."""
    lines = [f"VRAM estimate: {title}", ""]
    for key, value in result.breakdown.items():
        lines.append(f"  {key:<12} {gib(value):>12}")
    lines.append(f"  {'peak':<12} {gib(result.total_bytes):>12}  ({result.peak_phase.replace('_', ' ')})")
    lines += ["", f"phases:{'VRAM':>23} {'RAM':>12}"]
    lines += [f"  {phase.replace('_', ' '):<14} {gib(memory.vram_bytes):>12} {gib(memory.ram_bytes):>12}"
              for phase, memory in result.phases.items()]
    lines.append(f"  host RAM peak: {gib(result.ram_bytes)} ({result.ram_peak_phase.replace('_', ' ')})")
    lines += ["", "parts:"]
    for name, part in result.parts.items():
        where = "on GPU" if part.resident else "freed after caching" if part.freed else "off GPU while training"
        if result.offload is not None and name == next(iter(result.parts)):
            where = "on GPU, its blocks in RAM (block offload)"
        lines.append(f"  {name:<15} {part.params:>15,} params  {part.dtype:<9} {gib(part.bytes):>12}  {where}")
    if result.offload is not None:
        lines += ["", offload_line(result)]
    lines.append("")
    if result.budget_bytes is None:
        lines.append(f"budget: none ({gpu_message}; give one with --gpu-memory 24GiB)")
    else:
        source = f"{result.gpu.name} free memory" if result.gpu is not None and result.budget_bytes == result.gpu.free_bytes else "--gpu-memory"
        verdict = "fits" if result.fits else "does NOT fit"
        lines.append(f"budget: {gib(result.budget_bytes)} ({source}): {verdict}, "
                     f"{gib(abs(result.budget_bytes - result.total_bytes))} {'to spare' if result.fits else 'over'}")
    if result.suggestions:
        lines += ["", "to use less VRAM:"]
        lines += [f"  {'-' + gib(s.saves_bytes):>12}  {s.change}" for s in result.suggestions]
    if result.warnings:
        lines += ["", "warnings:"]
        lines += [f"  ! {warning}" for warning in result.warnings]
    return "\n".join(lines) + "\n"


def offload_line(result: Estimate) -> str:
    """Block offload's split and per-step copy cost, in words."""
    cost = result.offload
    return (f"block offload: {gib(cost.block_bytes)} of transformer blocks in pinned RAM (taking {gib(cost.ram_bytes)}), "
            f"{gib(cost.gpu_bytes)} of them on the GPU at once; copies {gib(cost.bytes_per_step)} to the GPU per step, about {cost.seconds_per_step:.1f} s at "
            f"{OFFLOAD_COPY_BYTES_PER_S / 1e9:.0f} GB/s (assumed PCIe 4.0 x16; prefetch hides part of it)")
