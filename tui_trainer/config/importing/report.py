"""What an import did with every source key (mapped, defaulted, not supported) and what to check by hand."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class Outcome(StrEnum):
    """What happened to one source key."""

    MAPPED = "mapped"
    DEFAULTED = "defaulted"
    """Absent from the source: the source tool's own default was imported."""
    UNSUPPORTED = "not supported"


@dataclass(frozen=True)
class KeyReport:
    """One source key: its outcome, the tui-trainer key and value it became, and a note (why, or what changed)."""

    key: str
    outcome: Outcome
    target: str = ""
    value: Any = None
    note: str = ""

    def line(self) -> str:
        """One human-readable line."""
        if self.outcome is Outcome.UNSUPPORTED:
            return f"{self.key}: {self.note}"
        written = f"{self.target} = {json.dumps(self.value)}" if self.value is not None else f"{self.target} (absent)"
        return f"{self.key} -> {written}" + (f"  ({self.note})" if self.note else "")


@dataclass
class ImportReport:
    """The report of one import: what was read, each source key's fate, and warnings."""

    source: str
    kind: str
    """What the source was taken for, e.g. 'OneTrainer config, version 3'."""
    files: list[str] = field(default_factory=list)
    """Other files the import read (concepts, samples, dataset config)."""
    keys: list[KeyReport] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    """Values whose meaning changes, paths that do not exist here, guesses."""

    def of(self, outcome: Outcome) -> list[KeyReport]:
        """The keys with one outcome, in source order."""
        return [entry for entry in self.keys if entry.outcome is outcome]

    def to_json(self) -> dict[str, Any]:
        """The report as plain JSON data (for `tui-trainer import --json`)."""
        return {
            "source": self.source, "kind": self.kind, "files": self.files, "warnings": self.warnings,
            "keys": [{**asdict(entry), "outcome": entry.outcome.value} for entry in self.keys],
        }

    def summary(self) -> str:
        """'12 mapped, 30 defaulted, 4 not supported, 2 warnings'."""
        counts = [f"{len(self.of(outcome))} {outcome.value}" for outcome in Outcome]
        return ", ".join(counts) + f", {len(self.warnings)} warning" + ("" if len(self.warnings) == 1 else "s")

    def format(self) -> str:
        """The report as text: warnings first, then every key grouped by outcome."""
        lines = [f"Imported {self.source} ({self.kind}): {self.summary()}"]
        lines += [f"  also read {name}" for name in self.files]
        if self.warnings:
            lines.append("Warnings:")
            lines += [f"  ! {warning}" for warning in self.warnings]
        for outcome in Outcome:
            entries = self.of(outcome)
            if entries:
                lines.append(f"{outcome.value.capitalize()} ({len(entries)}):")
                lines += [f"  {entry.line()}" for entry in entries]
        return "\n".join(lines) + "\n"
