"""Scheduler & learning rates: the schedule, and per trainable part of the family whether, how long and at which LR."""

from __future__ import annotations

from collections.abc import Iterable

from tui_trainer.config.schema import PartConfig
from tui_trainer.models.families import spec_for_model
from tui_trainer.tui.outline import SECTION_TITLES
from tui_trainer.tui.screens.section import Group, SectionPane

TRAINING_FIELDS = tuple(name for name in PartConfig.model_fields if name != "dtype")
"""A part's training settings (its dtype is on the Model & method pane)."""


class SchedulerPane(SectionPane):
    """Schedule, warmup, and per-part training."""

    SECTION = "scheduler"
    TITLE = SECTION_TITLES[SECTION]
    REBUILD_ON = frozenset({"model.family"})

    def groups(self) -> Iterable[Group]:
        yield Group("Schedule", "scheduler")
        yield Group("Global", "optimizer", ("learning_rate",))
        model = self.document.config.model
        for part in spec_for_model(model.family, model.base_model).trainable_parts:
            yield Group(part.label, f"parts.{part.config_section}", TRAINING_FIELDS)
