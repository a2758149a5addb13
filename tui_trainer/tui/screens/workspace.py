"""Workspace: folders for runs, caches and outputs."""

from __future__ import annotations

from tui_trainer.tui.screens.section import Group, SectionPane


class WorkspacePane(SectionPane):
    """Workspace folder, cache, run name and output."""

    SECTION = "workspace"
    TITLE = "Workspace"
    GROUPS = (Group("Workspace", "workspace"),)
