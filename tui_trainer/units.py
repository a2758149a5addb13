"""Units every layer shares (the trainer's log, the estimator, the TUI): pure Python, no imports."""

GIB = 2**30
"""Bytes in a GiB."""


def format_duration(seconds: float | None) -> str:
    """H:MM:SS (hours unbounded, a negative time as 0:00:00), or '?' when unknown."""
    if seconds is None:
        return "?"
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
