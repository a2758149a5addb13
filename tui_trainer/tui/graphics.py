"""Which image protocol the terminal speaks (sixel, kitty graphics or neither), asked once before the app starts.

textual-image finds out by querying the terminal when it is imported, one question at a time, and it must be
imported before Textual owns the terminal; it also pulls in numpy. Importing it up front cost the editor a
quarter of a second of start-up (more in a terminal that never answers). Here the three questions go out in
one write before the app starts, in a thread while Textual is imported, and the answers are in after one
round trip: every terminal answers Primary Device Attributes (DA1), and terminals answer in order, so once
the DA1 reply is in, any kitty-graphics or cell-size reply has come before it. textual-image is imported only
when the first sample is shown, with the answers already known (see `image_widget_class`).
"""

from __future__ import annotations

import fcntl
import io
import os
import re
import select
import struct
import sys
import termios
import threading
import time
import tty
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

PROBE_TIMEOUT_S = 0.2
"""How long to wait for the terminal's DA1 reply (a terminal that never answers costs this once)."""

KITTY_QUERY = "\x1b_Gi=31,s=1,v=1,a=q,t=d,f=24;AAAA\x1b\\"
"""Kitty graphics protocol query with a 1x1 image; a terminal that speaks it replies `\\x1b_Gi=31;OK\\x1b\\\\`."""
CELL_SIZE_QUERY = "\x1b[16t"
"""XTWINOPS: cell size in pixels; the reply is `\\x1b[6;<height>;<width>t`."""
DA1_QUERY = "\x1b[c"
"""Primary Device Attributes; attribute 4 in the reply `\\x1b[?<attrs>c` means sixel graphics."""

KITTY_REPLY = re.compile(rb"\x1b_Gi=31;([^\x1b]*)\x1b\\")
CELL_SIZE_REPLY = re.compile(rb"\x1b\[6;(\d+);(\d+)t")
DA1_REPLY = re.compile(rb"\x1b\[\?([\d;]*)c")


@dataclass(frozen=True)
class TerminalGraphics:
    """What the terminal told us about images."""

    protocol: str
    """One of PROTOCOLS: sixel, tgp (kitty graphics), halfcell (any colour terminal), unicode (not a terminal)."""
    cell_size: tuple[int, int] | None = None
    """(width, height) of a cell in pixels when the terminal said so."""


PROTOCOLS = ("sixel", "tgp", "halfcell", "unicode")
"""In textual-image's order of preference: sixel before kitty graphics (see its renderable module)."""

NOT_A_TERMINAL = TerminalGraphics("unicode")


def parse_replies(replies: bytes) -> tuple[TerminalGraphics, bool]:
    """(what the replies say, whether the DA1 reply that ends them has arrived)."""
    da1 = DA1_REPLY.search(replies)
    kitty = KITTY_REPLY.search(replies)
    cell = CELL_SIZE_REPLY.search(replies)
    if da1 is not None and "4" in da1.group(1).decode().split(";"):
        protocol = "sixel"
    elif kitty is not None and kitty.group(1) == b"OK":
        protocol = "tgp"
    else:
        protocol = "halfcell"
    cell_size = (int(cell.group(2)), int(cell.group(1))) if cell is not None else None
    return TerminalGraphics(protocol, cell_size if cell_size and all(cell_size) else None), da1 is not None


def probe(stdin_fd: int, stdout_fd: int, timeout: float = PROBE_TIMEOUT_S) -> TerminalGraphics:
    """Ask the terminal on these descriptors (one write, one round trip); never raises."""
    try:
        if not (os.isatty(stdin_fd) and os.isatty(stdout_fd)):
            return NOT_A_TERMINAL
        saved = termios.tcgetattr(stdin_fd)
    except (OSError, termios.error):
        return NOT_A_TERMINAL
    replies = b""
    graphics = TerminalGraphics("halfcell")
    try:
        tty.setcbreak(stdin_fd, termios.TCSANOW)
        os.write(stdout_fd, (KITTY_QUERY + CELL_SIZE_QUERY + DA1_QUERY).encode())
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            if not select.select([stdin_fd], [], [], remaining)[0]:
                break
            replies += os.read(stdin_fd, 1024)
            graphics, complete = parse_replies(replies)
            if complete:
                break
    except OSError:
        pass
    finally:
        termios.tcsetattr(stdin_fd, termios.TCSANOW, saved)
    if graphics.cell_size is None:
        graphics = TerminalGraphics(graphics.protocol, window_cell_size(stdout_fd))
    return graphics


def window_cell_size(fd: int) -> tuple[int, int] | None:
    """Cell size in pixels from the terminal's window size (TIOCGWINSZ), when it reports pixels (many do not)."""
    try:
        rows, columns, width, height = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, bytes(8)))
    except OSError:
        return None
    if not (rows and columns and width and height):
        return None
    return width // columns, height // rows


_detected: TerminalGraphics | None = None


def start_probe() -> Callable[[], TerminalGraphics]:
    """Probe stdin/stdout in a thread (call before Textual is imported); returns a wait() for the answer.

    wait() must return before the app takes the terminal.
    """
    def run() -> None:
        global _detected
        try:
            _detected = probe(sys.__stdin__.fileno(), sys.__stdout__.fileno())
        except (AttributeError, ValueError, OSError):  # stdin/stdout closed or replaced
            _detected = NOT_A_TERMINAL

    thread = threading.Thread(target=run, name="terminal-graphics-probe", daemon=True)
    thread.start()

    def wait() -> TerminalGraphics:
        thread.join()
        return detected()

    return wait


def detected() -> TerminalGraphics:
    """What the probe found; unicode when no probe ran (tests, headless apps)."""
    return _detected or NOT_A_TERMINAL


@contextmanager
def _terminal_out_of_reach():
    """textual-image queries the terminal when imported whenever sys.__stdout__ is a tty. Inside the app
    Textual owns the terminal and would swallow the replies, so during that import sys.__stdout__ is a
    stand-in that is not a tty (Textual itself writes to sys.__stderr__); the answers came from `probe`."""
    saved = sys.__stdout__
    sys.__stdout__ = io.StringIO()
    try:
        yield
    finally:
        sys.__stdout__ = saved


def image_widget_class() -> type[Any]:
    """textual-image's widget class for the detected protocol (imported here, on first use)."""
    graphics = detected()
    with _terminal_out_of_reach():
        from textual_image import _terminal

        if graphics.cell_size is not None:  # textual-image's own cache of the cell size (read by its widgets)
            _terminal.get_cell_size._result = _terminal.CellSize(*graphics.cell_size)
        from textual_image import widget
    widget_classes = {"sixel": widget.SixelImage, "tgp": widget.TGPImage, "halfcell": widget.HalfcellImage,
                      "unicode": widget.UnicodeImage}
    return widget_classes[graphics.protocol]
