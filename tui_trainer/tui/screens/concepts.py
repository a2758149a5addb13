"""Concepts: the dataset folders, edited as a list."""

from __future__ import annotations

from collections.abc import Iterable

from textual.widget import Widget

from tui_trainer.config.schema import ConceptConfig
from tui_trainer.tui.outline import SECTION_TITLES
from tui_trainer.tui.screens.record_dialog import RecordDialog
from tui_trainer.tui.screens.section import SectionPane
from tui_trainer.tui.widgets.record_list import Column, RecordList

COLUMNS: tuple[Column, ...] = (
    ("on", lambda concept: "✓" if concept.enabled else "·"),
    ("name", lambda concept: concept.name),
    ("path", lambda concept: concept.path),
    ("×", lambda concept: f"{concept.repeats:g}"),
    ("type", lambda concept: concept.type.value),
)


def new_concept(index: int) -> ConceptConfig:
    """A draft concept for the add dialog (its path still to be typed)."""
    return ConceptConfig.model_construct(name=f"concept-{index + 1}", path="")


class ConceptsPane(SectionPane):
    """a add · e/Enter edit · x remove · space on/off · Shift+↑/↓ reorder."""

    SECTION = "concepts"
    TITLE = SECTION_TITLES[SECTION]

    @property
    def title(self) -> str:
        return f"Concepts ({len(self.document.config.concepts)})"

    def extra_widgets(self) -> Iterable[Widget]:
        yield RecordList("concepts", ConceptConfig, self.document.config.concepts, COLUMNS, new_concept,
                         dialog=RecordDialog, empty_hint="No concepts yet. Press a to add an image folder.", id="concepts-list")
