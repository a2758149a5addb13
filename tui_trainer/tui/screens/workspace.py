"""Workspace: folders for runs, caches and outputs; wandb logging."""

from __future__ import annotations

from tui_trainer.tui.outline import SECTION_TITLES
from tui_trainer.tui.screens.section import Group, SectionPane


class WorkspacePane(SectionPane):
    """Workspace folder, cache, run name and output; wandb logging."""

    SECTION = "workspace"
    TITLE = SECTION_TITLES[SECTION]
    GROUPS = (Group("Workspace", "workspace"), Group("Weights & Biases", "wandb"))
