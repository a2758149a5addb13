"""The terminal-graphics probe: one write of three questions, answers read until the DA1 reply, on a real pty."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import threading
import time

import pytest

from tui_trainer.tui import graphics
from tui_trainer.tui.graphics import TerminalGraphics, parse_replies, probe

SIXEL_DA1 = b"\x1b[?62;4;6;22c"
PLAIN_DA1 = b"\x1b[?62;22c"
KITTY_OK = b"\x1b_Gi=31;OK\x1b\\"
KITTY_ERROR = b"\x1b_Gi=31;ENOTSUPPORTED:unsupported\x1b\\"
CELL_10x21 = b"\x1b[6;21;10t"


@pytest.mark.parametrize(
    ("replies", "expected", "complete"),
    [
        (CELL_10x21 + SIXEL_DA1, TerminalGraphics("sixel", (10, 21)), True),
        (KITTY_OK + CELL_10x21 + PLAIN_DA1, TerminalGraphics("tgp", (10, 21)), True),
        (KITTY_ERROR + PLAIN_DA1, TerminalGraphics("halfcell"), True),
        (PLAIN_DA1, TerminalGraphics("halfcell"), True),
        (KITTY_OK + CELL_10x21, TerminalGraphics("tgp", (10, 21)), False),
        (b"\x1b[6;0;0t" + PLAIN_DA1, TerminalGraphics("halfcell"), True),
        (b"", TerminalGraphics("halfcell"), False),
    ],
)
def test_parse_replies(replies: bytes, expected: TerminalGraphics, complete: bool):
    assert parse_replies(replies) == (expected, complete)


def fake_terminal(reply: bytes | None, delay: float = 0.0) -> tuple[int, list[bytes], threading.Thread]:
    """A pty whose far end reads the probe's questions and answers with `reply` (None: never answers)."""
    far, near = pty.openpty()
    questions: list[bytes] = []

    def answer() -> None:
        received = b""
        while not received.endswith(graphics.DA1_QUERY.encode()):
            received += os.read(far, 1024)
        questions.append(received)
        if reply is not None:
            time.sleep(delay)
            os.write(far, reply)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    return near, questions, thread


@pytest.mark.parametrize(
    ("reply", "protocol"),
    [(CELL_10x21 + SIXEL_DA1, "sixel"), (KITTY_OK + CELL_10x21 + PLAIN_DA1, "tgp"), (KITTY_ERROR + PLAIN_DA1, "halfcell")],
)
def test_probe_asks_once_and_reads_the_answers_of_a_terminal(reply: bytes, protocol: str):
    near, questions, thread = fake_terminal(reply, delay=0.05)
    try:
        started = time.monotonic()
        found = probe(near, near, timeout=5.0)
        elapsed = time.monotonic() - started
    finally:
        thread.join(2)
        os.close(near)
    assert questions == [(graphics.KITTY_QUERY + graphics.CELL_SIZE_QUERY + graphics.DA1_QUERY).encode()]
    assert found.protocol == protocol
    assert elapsed < 2.0, "the probe must stop at the DA1 reply, not wait for its timeout"


def test_probe_gives_half_cells_when_the_terminal_never_answers_and_restores_the_mode():
    import termios

    near, _, thread = fake_terminal(None)
    try:
        before = termios.tcgetattr(near)
        started = time.monotonic()
        found = probe(near, near, timeout=0.2)
        elapsed = time.monotonic() - started
        after = termios.tcgetattr(near)
    finally:
        os.close(near)
    assert found.protocol == "halfcell"
    assert 0.2 <= elapsed < 1.5
    assert after == before


def test_probe_of_a_pipe_is_not_a_terminal():
    read_end, write_end = os.pipe()
    try:
        assert probe(read_end, write_end) == graphics.NOT_A_TERMINAL
    finally:
        os.close(read_end)
        os.close(write_end)


def test_image_widget_class_follows_the_probe_without_touching_the_terminal():
    """In a fresh process whose stdout is a tty that fails the test if written to: textual-image is imported
    through image_widget_class with sixel detected, and picks the sixel widget and the probed cell size."""
    script = (
        "import sys\n"
        "from tui_trainer.tui import graphics\n"
        "graphics._detected = graphics.TerminalGraphics('sixel', (9, 19))\n"
        "cls = graphics.image_widget_class()\n"
        "from textual_image import _terminal\n"
        "print(cls.__module__, cls.__name__, tuple(_terminal.get_cell_size()), file=sys.stderr)\n"
    )
    far, near = pty.openpty()
    try:
        result = subprocess.run([sys.executable, "-c", script], stdin=near, stdout=near, stderr=subprocess.PIPE,
                                timeout=120, text=True)
        os.set_blocking(far, False)
        try:
            written = os.read(far, 4096)
        except BlockingIOError:
            written = b""
    finally:
        os.close(far)
        os.close(near)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines()[-1] == "textual_image.widget.sixel Image (9, 19)"
    assert written == b"", f"textual-image wrote to the terminal: {written!r}"
