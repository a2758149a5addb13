"""Review: everything that blocks saving or training, and warnings, before the config is saved."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.text import Text
from textual.widget import Widget
from textual.widgets import Button, Static

from tui_trainer.tui.outline import SECTION_TITLES
from tui_trainer.tui.screens.section import SectionPane
from tui_trainer.tui.widgets.vram_panel import gib


def review_lines(document: Any, estimate: Any, report: Any) -> tuple[list[str], list[str], list[str]]:
    """(errors that block saving, problems that block training, warnings)."""
    errors = [f"{problem.key}: {problem.message}" if problem.key else problem.message for problem in document.errors()]
    blockers = [f"{problem.key}: {problem.message}" for problem in document.path_problems()]
    if not any(concept.enabled for concept in document.config.concepts):
        blockers.append("concepts: no enabled concept; add an image folder in Concepts")
    warnings: list[str] = []
    if report is not None:
        blockers += list(report.errors)
        warnings += [f"bucket {b.width}x{b.height}: {w}" for b in report.buckets for w in b.warnings]
        warnings += list(report.warnings)
        warnings += [f"skipped {item.path}: {item.reason}" for item in report.skipped]
    if estimate is not None:
        if estimate.fits is False:
            warnings.append(f"over budget: needs {gib(estimate.total_bytes)} GiB of {gib(estimate.budget_bytes)} GiB")
            warnings += [f"  try: {s.change} (-{gib(s.saves_bytes)} GiB)" for s in estimate.suggestions]
        warnings += list(estimate.warnings)
    return errors, blockers, warnings


class ReviewPane(SectionPane):
    """Lists validation errors and warnings; Save (Ctrl+S) writes the file."""

    SECTION = "review"
    TITLE = SECTION_TITLES[SECTION]
    lines: tuple[list[str], list[str], list[str]] = ([], [], [])
    """(errors, problems before training, warnings) as last shown."""

    def extra_widgets(self) -> Iterable[Widget]:
        yield Static("", id="review-body")
        yield Button("Save (Ctrl+S)", id="review-save", variant="primary", compact=True)

    def show(self, estimate: Any, report: Any) -> None:
        """Redraw from the document and the panels' latest results."""
        errors, blockers, warnings = self.lines = review_lines(self.document, estimate, report)
        text = Text()
        sections = (
            ("Errors (fix these to save)", errors, "red"),
            ("Before training", blockers, "yellow"),
            ("Warnings", warnings, "yellow"),
        )
        for title, lines, style in sections:
            text.append(f"{title}: {len(lines) or 'none'}\n", "bold")
            for line in lines:
                text.append(f"  • {line}\n", style)
        target = str(self.document.path) if self.document.path else "a new file (you will be asked for a name)"
        verdict = "Cannot save yet." if errors else f"Ready to save to {target}."
        text.append(verdict, "bold red" if errors else "bold green")
        self.query_one("#review-body", Static).update(text)
