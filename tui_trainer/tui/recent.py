"""Recently opened config files, kept in the user's state dir (platformdirs)."""

from __future__ import annotations

import json
from pathlib import Path

from tui_trainer.atomic import atomic_write_json

MAX_RECENT = 10


class RecentFiles:
    """A short most-recent-first list of config paths stored as JSON."""

    def __init__(self, state_dir: Path) -> None:
        self.file = Path(state_dir) / "recent.json"

    def load(self) -> list[Path]:
        """Recent files that still exist, newest first."""
        try:
            entries = json.loads(self.file.read_text(encoding="utf-8")).get("files", [])
        except (OSError, ValueError, AttributeError):
            return []
        return [Path(entry) for entry in entries if isinstance(entry, str) and Path(entry).is_file()]

    def add(self, path: Path) -> None:
        """Put `path` first."""
        path = Path(path).resolve()
        files = [path, *(entry for entry in self.load() if entry != path)][:MAX_RECENT]
        atomic_write_json(self.file, {"files": [str(entry) for entry in files]})
