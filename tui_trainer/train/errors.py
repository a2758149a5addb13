"""The trainer's own error: a run cannot go on, and the hint says what to do."""

from __future__ import annotations


class TrainError(Exception):
    """A run cannot go on; `hint` says what to do."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.hint = hint


class ModelLoadError(Exception):
    """The base model cannot be loaded; the message says why and what to do."""
