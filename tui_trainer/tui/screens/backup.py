"""Backup, save and sampling cadence."""

from __future__ import annotations

from tui_trainer.tui.screens.section import Group, SectionPane


class BackupPane(SectionPane):
    """When backups, model saves and samples happen."""

    SECTION = "backup"
    TITLE = "Backup & save"
    GROUPS = (Group("Backup", "backup"), Group("Save", "save"), Group("Sampling", "sampling"))
