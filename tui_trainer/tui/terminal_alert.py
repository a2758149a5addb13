"""The terminal's own alert when a watched run ends: the bell plus an OSC 9 and an OSC 777 desktop notification.

These are escape sequences written to the terminal, so they reach the user's own machine over SSH; terminals that
know neither ignore them. Inside tmux they are wrapped for passthrough (tmux needs `set -g allow-passthrough on`).
"""

from __future__ import annotations

import os
import re
from typing import Any

BELL = "\a"
_UNSAFE = re.compile(r"[\x00-\x1f\x7f;]+")


def _clean(text: str) -> str:
    """One line without control characters or the ';' that separates OSC 777 fields."""
    return _UNSAFE.sub(" ", text).strip()


def _tmux_passthrough(sequence: str) -> str:
    return "\x1bPtmux;" + sequence.replace("\x1b", "\x1b\x1b") + "\x1b\\"


def alert_text(title: str, body: str, *, in_tmux: bool = False) -> str:
    """The bell, `ESC ] 9 ; title: body BEL` (iTerm2, Windows Terminal, kitty, WezTerm) and
    `ESC ] 777 ; notify ; title ; body BEL` (foot, Ghostty, urxvt, VTE terminals)."""
    title, body = _clean(title), _clean(body)
    sequences = [f"\x1b]9;{title}: {body}\a", f"\x1b]777;notify;{title};{body}\a"]
    if in_tmux:
        sequences = [_tmux_passthrough(sequence) for sequence in sequences]
    return BELL + "".join(sequences)


def alert_terminal(app: Any, title: str, body: str) -> str | None:
    """Write the alert to the app's terminal; returns what was written (None without a driver)."""
    driver = getattr(app, "_driver", None)
    if driver is None:
        return None
    text = alert_text(title, body, in_tmux=bool(os.environ.get("TMUX")))
    driver.write(text)
    driver.flush()
    return text
