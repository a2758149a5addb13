"""Scheduler & learning rates: the schedule, and per part (UNet, text encoders) whether, how long and at which LR."""

from __future__ import annotations

from collections.abc import Iterable

from tui_trainer.config.enums import Family
from tui_trainer.tui.outline import SECTION_TITLES
from tui_trainer.tui.screens.section import Group, SectionPane

PART_TITLES: dict[str, str] = {"unet": "UNet", "text_encoder": "Text encoder", "text_encoder_2": "Text encoder 2"}
"""Trainable parts and their titles."""

FAMILY_PARTS: dict[Family, tuple[str, ...]] = {Family.SDXL: ("unet", "text_encoder", "text_encoder_2")}
"""Parts per family when not just the UNet and one text encoder."""


class SchedulerPane(SectionPane):
    """Schedule, warmup, and per-part training."""

    SECTION = "scheduler"
    TITLE = SECTION_TITLES[SECTION]
    REBUILD_ON = frozenset({"model.family"})

    def groups(self) -> Iterable[Group]:
        yield Group("Schedule", "scheduler")
        yield Group("Global", "optimizer", ("learning_rate",))
        for part in FAMILY_PARTS.get(self.document.config.model.family, ("unet", "text_encoder")):
            yield Group(PART_TITLES[part], part)
