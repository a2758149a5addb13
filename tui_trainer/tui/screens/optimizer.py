"""Optimizer: which one, the global learning rate, and that optimizer's own remembered settings."""

from __future__ import annotations

from collections.abc import Iterable

from tui_trainer.tui.outline import SECTION_TITLES
from tui_trainer.tui.screens.section import Group, SectionPane


class OptimizerPane(SectionPane):
    """Settings live in optimizer.settings.<name>, so switching optimizer and back restores them."""

    SECTION = "optimizer"
    TITLE = SECTION_TITLES[SECTION]
    REBUILD_ON = frozenset({"optimizer.name"})

    def groups(self) -> Iterable[Group]:
        name = self.document.config.optimizer.name.value
        yield Group("Optimizer", "optimizer", ("name", "learning_rate"))
        yield Group(f"{name} settings", f"optimizer.settings.{name}")
