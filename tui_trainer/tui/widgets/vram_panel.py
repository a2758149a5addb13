"""VRAM budget: the estimate's total and breakdown against the GPU (or a typed target), suggestions, warnings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Input, Label, Static

from tui_trainer.config import TrainConfig
from tui_trainer.tui.widgets.ordered_input import OrderedInput
from tui_trainer.units import GIB

MIB = 2**20
BREAKDOWN = ("weights", "trainable", "gradients", "optimizer", "activations", "caches", "overhead")
"""Breakdown rows, in display order."""
BAR_WIDTH = 8
"""Cells of the largest bar: a row (12 name + 5 size + 1 + bar) fits the 26 columns inside the panel on an
80-column screen."""
TOP_SUGGESTIONS = 3


def gib(count: int | float) -> str:
    """Bytes as GiB with one decimal."""
    return f"{count / GIB:.1f}"


def breakdown_size(count: int | float) -> str:
    """Bytes for a breakdown row: GiB with one decimal from 1 GiB up, else whole MiB (a LoRA's trainable weights,
    gradients and optimizer state are tens of MiB, which one decimal of GiB shows as 0.0)."""
    return f"{count / GIB:.1f}G" if count >= GIB else f"{count / MIB:.0f}M"


def parse_gib(text: str) -> int | None:
    """'24' or '24GiB' or '7.5 GB' -> bytes; None when empty or not a positive number."""
    number = text.strip().lower().removesuffix("gib").removesuffix("gb").removesuffix("g").strip()
    try:
        value = float(number)
    except ValueError:
        return None
    return int(value * GIB) if value > 0 else None


def gpu_label(gpu: Any) -> str:
    """'GPU 0: RTX 4090 24.0 GiB (21.3 free)'."""
    return f"GPU {gpu.index}: {gpu.name} {gib(gpu.total_bytes)} GiB ({gib(gpu.free_bytes)} free)"


def render_estimate(estimate: Any) -> Text:
    """The panel's text for an Estimate."""
    total = estimate.total_bytes
    budget = estimate.budget_bytes
    text = Text()
    if budget:
        verdict, style = ("fits", "green") if estimate.fits else (f"over {gib(total - budget)}", "bold red")
        text.append(f"total {gib(total)}/{gib(budget)} GiB ")
        text.append(verdict, style)
    else:
        text.append(f"total {gib(total)} GiB ")
        text.append("(no target)", "dim")
    scale = max(budget or 0, total, 1)
    for name in BREAKDOWN:
        count = estimate.breakdown.get(name, 0)
        cells = round(count / scale * BAR_WIDTH)
        text.append(f"\n{name:<12}{breakdown_size(count):>5} ")
        text.append("█" * cells, "red" if estimate.fits is False else "green")
    if estimate.peak_phase:
        text.append(f"\npeak: {estimate.peak_phase.replace('_', ' ')}", "dim")
    if getattr(estimate, "phases", None):
        text.append(f"\nRAM {gib(estimate.ram_bytes)} GiB ({estimate.ram_peak_phase.replace('_', ' ')})", "dim")
    offload = getattr(estimate, "offload", None)
    if offload is not None:
        text.append(f"\nblock offload: {gib(offload.bytes_per_step)} GiB copied a step, ~{offload.seconds_per_step:.1f} s", "dim")
    if estimate.fits is False:
        for suggestion in estimate.suggestions[:TOP_SUGGESTIONS]:
            text.append(f"\n→ {suggestion.change} -{gib(suggestion.saves_bytes)}", "yellow")
    for warning in estimate.warnings:
        text.append(f"\n! {warning}", "yellow")
    return text


class VramPanel(Vertical):
    """Recomputes the VRAM estimate on every config change (the estimator takes well under a millisecond)."""

    class Updated(Message):
        """A new estimate (or None when the estimator is unavailable)."""

        def __init__(self, estimate: Any) -> None:
            super().__init__()
            self.estimate = estimate

    def __init__(self, estimator: Callable[..., Any] | None, *, target_bytes: int | None = None,
                 id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = "VRAM budget"
        self.estimator = estimator
        self.target_bytes = target_bytes
        self.gpu: Any = None
        self.probe_message = "probing GPU…"
        self.estimate: Any = None
        self.config: TrainConfig | None = None
        self._lines = -1

    def compose(self) -> ComposeResult:
        yield Static(self.probe_message, id="vram-gpu")
        with Horizontal(id="vram-target-row"):
            yield Label("target GiB ")
            yield OrderedInput("" if self.target_bytes is None else gib(self.target_bytes), placeholder="e.g. 24",
                               id="vram-target", compact=True)
        yield Static("", id="vram-body")

    def set_probe(self, probe: Any) -> None:
        """Use the first detected GPU, or ask for a target size when there is none."""
        self.gpu = probe.gpus[0] if probe is not None and probe.gpus else None
        self.probe_message = gpu_label(self.gpu) if self.gpu else (getattr(probe, "message", "") or "no GPU")
        self.query_one("#vram-gpu", Static).update(self.probe_message)
        self.query_one("#vram-target-row").display = self.gpu is None
        self.recompute()

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.target_bytes = parse_gib(event.value)
        self.recompute()

    def recompute(self, config: TrainConfig | None = None) -> None:
        """Estimate `config` (or the last one) again and redraw."""
        self.config = config or self.config
        body = self.query_one("#vram-body", Static)
        if self.config is None:
            return
        if self.estimator is None:
            self.estimate = None
            body.update("VRAM estimator not available")
        else:
            self.estimate = self.estimator(self.config, self.gpu, target_bytes=None if self.gpu else self.target_bytes)
            text = render_estimate(self.estimate)
            lines = text.plain.count("\n")
            body.update(text, layout=lines != self._lines)
            self._lines = lines
        self.set_class(bool(self.estimate) and self.estimate.fits is False, "-over")
        self.post_message(self.Updated(self.estimate))
