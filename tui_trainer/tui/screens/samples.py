"""Samples: the prompts rendered during training, edited as a list."""

from __future__ import annotations

from collections.abc import Iterable

from textual.widget import Widget

from tui_trainer.config.schema import SampleConfig
from tui_trainer.tui.outline import SECTION_TITLES
from tui_trainer.tui.screens.record_dialog import RecordDialog
from tui_trainer.tui.screens.section import SectionPane
from tui_trainer.tui.widgets.record_list import Column, RecordList


def _size(sample: SampleConfig) -> str:
    return f"{sample.width or '·'}x{sample.height or '·'}"


COLUMNS: tuple[Column, ...] = (
    ("prompt", lambda sample: sample.prompt),
    ("size", _size),
    ("seed", lambda sample: str(sample.seed)),
    ("steps", lambda sample: str(sample.steps)),
    ("sampler", lambda sample: sample.sampler),
)


def new_sample(index: int) -> SampleConfig:
    """A draft sample for the add dialog."""
    return SampleConfig.model_construct(prompt="", seed=42 + index)


class SamplesPane(SectionPane):
    """a add · e/Enter edit · x remove · Shift+↑/↓ reorder."""

    SECTION = "samples"
    TITLE = SECTION_TITLES[SECTION]

    @property
    def title(self) -> str:
        return f"Samples ({len(self.document.config.samples)})"

    def extra_widgets(self) -> Iterable[Widget]:
        yield RecordList("samples", SampleConfig, self.document.config.samples, COLUMNS, new_sample,
                         dialog=RecordDialog, empty_hint="No samples yet. Press a to add a prompt.", id="samples-list")
