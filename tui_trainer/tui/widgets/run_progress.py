"""Progress bars: the current long phase (loading, caching, sampling, saving) and the whole run."""

from __future__ import annotations

from collections.abc import Callable

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Label, ProgressBar

from tui_trainer.runs.summary import RunSummary
from tui_trainer.units import format_duration

Phase = tuple[str, int | None, int]
"""(label, total or None for a bar without known length, done)."""


def _caching(summary: RunSummary) -> Phase:
    cache = summary.cache
    if cache is None:
        return "caching", None, 0
    return (f"caching {cache.kind} {cache.done}/{cache.total} ({cache.hits} reused) ETA {format_duration(cache.eta_s())}",
            cache.total, cache.done)


PHASES: dict[str, Callable[[RunSummary], Phase]] = {
    "starting": lambda summary: ("starting", None, 0),
    "loading": lambda summary: ("loading model", None, 0),
    "caching": _caching,
    "sampling": lambda summary: (f"sampling at step {summary.step}", None, 0),
    "saving": lambda summary: (f"saving step {summary.step}", None, 0),
}
"""State -> what its phase bar shows; states not listed have no phase bar."""


def run_label(summary: RunSummary) -> str:
    """'run 12/40 steps ETA 0:00:30'."""
    total = summary.total_steps
    steps = f"{summary.step}/{total}" if total else f"{summary.step}"
    return f"run {steps} steps ETA {format_duration(summary.eta_s)}"


class RunProgress(Vertical):
    """A phase bar (shown during long phases) above the whole-run bar."""

    DEFAULT_CSS = """
    RunProgress { height: auto; padding: 0 1; }
    RunProgress Horizontal { height: 1; }
    RunProgress Label { width: 1fr; }
    RunProgress ProgressBar { width: 50; }
    RunProgress #phase-row.-hidden { display: none; }
    """

    def compose(self) -> ComposeResult:
        with Horizontal(id="phase-row", classes="-hidden"):
            yield Label("", id="phase-label")
            yield ProgressBar(total=None, show_eta=False, id="phase-bar")
        with Horizontal(id="run-row"):
            yield Label("run", id="run-label")
            yield ProgressBar(total=None, show_eta=False, id="run-bar")

    def show(self, state: str, summary: RunSummary) -> None:
        """Update both bars for `state`."""
        phase = PHASES.get(state)
        row = self.query_one("#phase-row")
        row.set_class(phase is None, "-hidden")
        if phase is not None:
            label, total, done = phase(summary)
            self._label("#phase-label", label)
            self.query_one("#phase-bar", ProgressBar).update(total=total, progress=done)
        self._label("#run-label", run_label(summary))
        self.query_one("#run-bar", ProgressBar).update(total=summary.total_steps, progress=summary.step)

    def _label(self, selector: str, text: str) -> None:
        label = self.query_one(selector, Label)
        if str(label.content) != text:
            label.update(text)

    @property
    def phase_text(self) -> str | None:
        """The phase label, or None when no phase bar is shown."""
        if self.query_one("#phase-row").has_class("-hidden"):
            return None
        return str(self.query_one("#phase-label", Label).content)
