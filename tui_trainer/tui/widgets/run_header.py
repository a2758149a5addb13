"""The run's headline: state, step / total, epoch, it/s, ETA, elapsed, learning rates, VRAM vs the estimate."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from tui_trainer.runs.summary import RunSummary
from tui_trainer.units import GIB, format_duration


STATE_STYLES: dict[str, str] = {
    "starting": "yellow", "loading": "yellow", "caching": "yellow", "training": "bold green",
    "sampling": "bold magenta", "saving": "bold magenta", "stopped": "bold cyan", "finished": "bold cyan",
    "failed": "bold red", "crashed": "bold red",
}
"""How each state is coloured."""


def format_of(value: int | None, total: int | None) -> str:
    """'3/10', or '3' when the total is unknown."""
    return f"{value if value is not None else '?'}/{total}" if total else f"{value if value is not None else '?'}"


def format_lrs(lr: dict[str, float]) -> str:
    """'lr unet 1.00e-04  text_encoder 5.00e-05'."""
    return "lr " + "  ".join(f"{name} {value:.2e}" for name, value in lr.items()) if lr else "lr ?"


def format_vram(used: int | None, estimate: int | None) -> str:
    """'VRAM 11.2 GiB / est 11.8 GiB' (either side may be unknown)."""
    used_text = f"{used / GIB:.1f} GiB" if used is not None else "n/a"
    return f"VRAM {used_text}" + (f" / est {estimate / GIB:.1f} GiB" if estimate is not None else "")


class RunHeader(Static):
    """Two lines at the top of the run screen."""

    DEFAULT_CSS = """
    RunHeader { height: auto; max-height: 4; background: $panel; padding: 0 1; }
    """

    _shown: tuple[str, str] | None = None

    def show(self, name: str, state: str, summary: RunSummary, elapsed_s: float | None, estimate_bytes: int | None) -> None:
        """Redraw from the current summary."""
        speed = f"{summary.it_per_s:.2f} it/s" if summary.it_per_s else "? it/s"
        top = Text.assemble(
            (name, "bold"), "  ", (state, STATE_STYLES.get(state, "")),
            f"  step {format_of(summary.step, summary.total_steps)}",
            f"  epoch {format_of(summary.epoch, summary.epochs)}",
            f"  {speed}  ETA {format_duration(summary.eta_s)}",
        )
        bottom = Text.assemble(
            f"elapsed {format_duration(elapsed_s)}   ", format_lrs(summary.lr), "   ",
            format_vram(summary.vram_bytes, estimate_bytes),
            (f"   {summary.device}" if summary.device else "", "dim"),
            (f"   {summary.warnings} warnings" if summary.warnings else "", "yellow"),
        )
        text = top + "\n" + bottom
        if (text.plain, state) != self._shown:
            self._shown = (text.plain, state)
            self.update(text)
