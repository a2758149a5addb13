"""Scheduler & learning rates: the schedule, and per trainable part of the family whether, how long and at which LR."""

from __future__ import annotations

from collections.abc import Iterable

from tui_trainer.models.families import spec_for_model
from tui_trainer.tui.outline import SECTION_TITLES
from tui_trainer.tui.screens.section import Group, SectionPane


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
            yield Group(part.label, part.config_section)
