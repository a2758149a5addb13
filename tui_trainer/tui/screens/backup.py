"""Backup, save, sampling and validation cadence, and notifications."""

from __future__ import annotations

from tui_trainer.tui.outline import SECTION_TITLES
from tui_trainer.tui.screens.section import Group, SectionPane


class BackupPane(SectionPane):
    """When backups, model saves, samples and validation happen, and whether the terminal is alerted at the end."""

    SECTION = "backup"
    TITLE = SECTION_TITLES[SECTION]
    GROUPS = (Group("Backup", "backup"), Group("Save", "save"), Group("Sampling", "sampling"),
              Group("Validation", "validation"), Group("Notifications", "notify"))
