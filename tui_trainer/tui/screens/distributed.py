"""Distributed: processes (GPUs) and accelerate's mixed precision."""

from __future__ import annotations

from tui_trainer.tui.outline import SECTION_TITLES
from tui_trainer.tui.screens.section import Group, SectionPane


class DistributedPane(SectionPane):
    """Multi-GPU settings."""

    SECTION = "distributed"
    TITLE = SECTION_TITLES[SECTION]
    GROUPS = (Group("Distributed", "distributed"),)
