"""TUI latency in a real pseudo-terminal: start-up to first paint, and keystroke to VRAM-budget update.

    python benchmarks/tui.py [--runs 5] [--record docs/benchmarks.md]

Each figure runs `tui-trainer` as a user would (a new process on a 120x40 pty, TERM=xterm-256color) and
times bytes on the terminal: first paint = process start until the section list is drawn (the opening
screen, before the editor is loaded); editor ready = process start until the editor's VRAM total is drawn
(config validated, first section's fields and the budget on screen); update =
writing one digit into the batch-size field until the new VRAM total is drawn. References: a bare Textual
app with one Static (first paint) and the echo of one character typed into a text field of our app.
Also the loss chart's redraw with 100,000 steps (headless; `--chart-only` measures just that one).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import platform
import pty
import select
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Callable
from pathlib import Path

from tui_trainer.atomic import atomic_write_text
from tui_trainer.config import dump_config, load_preset

SIZE = (120, 40)
FIRST_PAINT_GOAL_S = 0.5
UPDATE_GOAL_S = 0.05
FIGURE = "tui:"
GIB = 2**30
SETTLE_S = 1.0
"""Time given to the app to finish what a key started (the cursor blinks, so it is never quiet for long)."""
BARE_APP = (
    "from textual.app import App\n"
    "from textual.widgets import Static\n"
    "class Bare(App):\n"
    "    def compose(self):\n"
    "        yield Static('Model & method')\n"
    "Bare().run()\n"
)


class Terminal:
    """A child process on a pseudo-terminal, with its output collected."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", SIZE[1], SIZE[0], 0, 0))
        self.started = time.perf_counter()
        self.process = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd,
                                        start_new_session=True)
        os.close(slave)
        self.master = master
        self.output = b""

    def wait_for(self, marker: bytes, since: int = 0, timeout: float = 30.0) -> float:
        """Seconds (perf_counter) when `marker` appeared in the output after offset `since`."""
        deadline = time.perf_counter() + timeout
        while marker not in self.output[since:]:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise TimeoutError(f"{marker!r} not seen; last output: {self.output[-400:]!r}")
            ready, _, _ = select.select([self.master], [], [], remaining)
            if ready:
                try:
                    self.output += os.read(self.master, 65536)
                except OSError:
                    raise TimeoutError(f"terminal closed before {marker!r}") from None
        return time.perf_counter()

    def drain(self, quiet: float = 0.2, limit: float = 2.0) -> None:
        """Read until the app has been quiet for `quiet` seconds (or `limit` seconds passed)."""
        deadline = time.perf_counter() + limit
        while select.select([self.master], [], [], quiet)[0] and time.perf_counter() < deadline:
            self.output += os.read(self.master, 65536)

    def settle(self) -> None:
        """Read for SETTLE_S seconds."""
        self.drain(quiet=SETTLE_S, limit=SETTLE_S)

    def send(self, data: bytes) -> tuple[int, float]:
        """Write keys; returns the output offset before them and when they were written."""
        offset = len(self.output)
        sent = time.perf_counter()
        os.write(self.master, data)
        return offset, sent

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        os.close(self.master)


def environment(root: Path) -> dict[str, str]:
    return {**os.environ, "TERM": "xterm-256color", "XDG_STATE_HOME": str(root / "state"),
            "XDG_CONFIG_HOME": str(root / "config"), "COLUMNS": str(SIZE[0]), "LINES": str(SIZE[1])}


def first_paint(argv: list[str], root: Path, marker: bytes) -> float:
    terminal = Terminal(argv, environment(root), root)
    try:
        return terminal.wait_for(marker) - terminal.started
    finally:
        terminal.close()


def total_marker(config, batch_size: int) -> bytes:
    """The VRAM panel's total text for `config` with another batch size (no GPU, no target)."""
    from tui_trainer.estimate import estimate

    changed = config.model_copy(deep=True)
    changed.training.batch_size = batch_size
    return f"total {estimate(changed).total_bytes / GIB:.1f} GiB".encode()


def keystroke_latencies(root: Path, config_path: Path, runs: int) -> tuple[list[float], list[float]]:
    """(digit typed into batch size -> new VRAM total drawn, character typed into a text field -> echo drawn)."""
    config = load_preset("sdxl-lora")
    markers = {size: total_marker(config, size) for size in (2, 8)}
    if markers[2] == markers[8]:
        raise SystemExit("batch size does not change the estimate; nothing to time")
    terminal = Terminal([sys.executable, "-m", "tui_trainer.cli", str(config_path)], environment(root), root)
    updates, echoes = [], []
    try:
        terminal.wait_for(markers[2])
        terminal.settle()
        terminal.send(b"\t\t")  # method -> family -> base model (a free-text field, its text selected on focus)
        terminal.settle()
        typed = b""
        for index in range(runs):
            typed += chr(ord("a") + index % 26).encode()
            offset, sent = terminal.send(typed[-1:])
            # The field's whole new text right after a style code: the cursor's blink redraws the field with its
            # old text, whose letters alone would match.
            echoes.append(terminal.wait_for(b"m" + typed + b"\x1b", offset) - sent)
            terminal.drain()
        for _ in range(5):
            terminal.send(b"\x1b[6~")  # PageDown: model, workspace, concepts, samples, backup -> training
            terminal.settle()
        terminal.wait_for(b"Resolution & batch")
        terminal.settle()
        terminal.send(b"\t")  # resolution -> batch size
        terminal.settle()
        for index in range(runs):
            size = 8 if index % 2 == 0 else 2
            terminal.send(b"\x1b[1;2H")  # shift+home selects the number; the digit typed next replaces it
            terminal.drain()
            offset, sent = terminal.send(str(size).encode())
            updates.append(terminal.wait_for(markers[size], offset) - sent)
            terminal.drain()
    finally:
        terminal.close()
    return updates, echoes


CHART_POINTS = 100_000
CHART_GOAL_S = 0.05


def chart_redraw(runs: int) -> tuple[float, float]:
    """Median seconds to redraw the loss chart with CHART_POINTS steps and paint its canvas: (ours, reference).

    Ours: LossChart.redraw (min/max and mean per pixel column, then textual-plot). Reference: the same
    PlotWidget given every point. Both end with every canvas line rendered, on a 120x40 headless app.
    """
    import asyncio

    import numpy as np
    from textual.app import App, ComposeResult
    from textual_plot import HiResMode, PlotWidget

    from tui_trainer.tui.widgets.loss_chart import LossChart

    rng = np.random.default_rng(0)
    steps = np.arange(1, CHART_POINTS + 1, dtype=np.float64)
    loss = 0.1 + 0.05 * rng.random(CHART_POINTS) + (rng.random(CHART_POINTS) > 0.999) * 0.5
    smoothed = np.empty_like(loss)
    smoothed[0] = loss[0]
    for index in range(1, CHART_POINTS):
        smoothed[index] = 0.9 * smoothed[index - 1] + 0.1 * loss[index]

    class ChartApp(App[None]):
        def compose(self) -> ComposeResult:
            yield LossChart()

    def paint(plot: PlotWidget) -> None:
        plot.render()
        canvas = plot.query_one("#plot")
        for y in range(canvas.size.height):
            canvas.render_line(y)

    def timed(action: Callable[[], None]) -> float:
        start = time.perf_counter()
        action()
        return time.perf_counter() - start

    def reference(plot: PlotWidget) -> None:
        plot.band = None
        plot.clear()
        plot.plot(steps, loss, line_style=LossChart.RAW_STYLE, hires_mode=HiResMode.BRAILLE)
        plot.plot(steps, smoothed, line_style=LossChart.SMOOTH_STYLE, hires_mode=HiResMode.BRAILLE)
        paint(plot)

    async def measure() -> tuple[float, float]:
        app = ChartApp()
        async with app.run_test(size=SIZE) as pilot:
            chart = app.query_one(LossChart)
            for step, raw, smooth in zip(steps.tolist(), loss.tolist(), smoothed.tolist(), strict=True):
                chart.add(step, raw, smooth)
            await pilot.pause()
            plot = chart.query_one(PlotWidget)
            ours = [timed(lambda: (chart.redraw(force=True), paint(plot))) for _ in range(runs)]
            theirs = [timed(lambda: reference(plot)) for _ in range(max(1, runs // 3))]
        return statistics.median(ours), statistics.median(theirs)

    return asyncio.run(measure())


def chart_row(runs: int) -> str:
    """Measure the chart redraw and print and return its table row."""
    ours, reference = chart_redraw(runs)
    print(f"loss chart redraw, {CHART_POINTS:,} points: ours {ours * 1000:.1f} ms, every point plotted "
          f"{reference * 1000:.0f} ms, ratio {ours / reference:.3f} (goal < {CHART_GOAL_S * 1000:.0f} ms)")
    return (f"| {FIGURE} loss chart redraw, {CHART_POINTS:,} steps, 120x40 ({time.strftime('%Y-%m-%d')}) "
            f"| {ours * 1000:.1f} ms | every point plotted {reference * 1000:.0f} ms | {ours / reference:.3f} "
            f"| < {CHART_GOAL_S * 1000:.0f} ms | {machine()} |")


def startup_rows(runs: int) -> list[str]:
    """Measure first paint, editor ready and keystroke-to-update (each beside its reference); print and return the rows."""
    root = Path(tempfile.mkdtemp(prefix="tt-tui-bench-"))
    preset = load_preset("sdxl-lora")
    config_path = root / "sdxl-lora.toml"
    config_path.write_text(dump_config(preset))
    argv = [sys.executable, "-m", "tui_trainer.cli", str(config_path)]
    ready_marker = total_marker(preset, preset.training.batch_size)
    bare, ours, ready = interleaved_medians(runs, [
        lambda: first_paint([sys.executable, "-c", BARE_APP], root, b"Model & method"),
        lambda: first_paint(argv, root, b"Model & method"),
        lambda: first_paint(argv, root, ready_marker),
    ])
    updates, echoes = keystroke_latencies(root, config_path, max(runs, 10))
    update, echo = statistics.median(updates), statistics.median(echoes)
    print(f"first paint: ours {ours * 1000:.0f} ms, bare Textual app {bare * 1000:.0f} ms, ratio {ours / bare:.2f} "
          f"(goal < {FIRST_PAINT_GOAL_S * 1000:.0f} ms)")
    print(f"editor ready (VRAM total drawn): {ready * 1000:.0f} ms, ratio {ready / bare:.2f} to the bare app")
    print(f"keystroke -> VRAM total redrawn: {update * 1000:.1f} ms, keystroke -> echo {echo * 1000:.1f} ms, "
          f"ratio {update / echo:.2f} (goal < {UPDATE_GOAL_S * 1000:.0f} ms)")
    when = time.strftime("%Y-%m-%d")
    return [
        f"| {FIGURE} start-up to first paint, `tui-trainer CONFIG` on a 120x40 pty ({when}) | {ours * 1000:.0f} ms "
        f"| bare Textual app {bare * 1000:.0f} ms | {ours / bare:.2f} | < {FIRST_PAINT_GOAL_S * 1000:.0f} ms | {machine()} |",
        f"| {FIGURE} start-up to editor ready (VRAM total drawn), `tui-trainer CONFIG` on a 120x40 pty ({when}) "
        f"| {ready * 1000:.0f} ms | bare Textual app {bare * 1000:.0f} ms | {ready / bare:.2f} |  | {machine()} |",
        f"| {FIGURE} keystroke to VRAM total redrawn (batch size digit) ({when}) | {update * 1000:.1f} ms "
        f"| keystroke to echo in a text field {echo * 1000:.1f} ms | {update / echo:.2f} "
        f"| < {UPDATE_GOAL_S * 1000:.0f} ms | {machine()} |",
    ]


def machine() -> str:
    return f"{platform.machine()} {os.cpu_count()} cpu, Python {platform.python_version()}"


def interleaved_medians(runs: int, measures: list[Callable[[], float]]) -> list[float]:
    """Each measure's median over `runs` rounds, the measures taking turns within a round: a figure and its
    reference then see the same machine (a shared VM's speed drifts by a third within minutes)."""
    rounds = [[measure() for measure in measures] for _ in range(runs)]
    return [statistics.median(column) for column in zip(*rounds)]


def record(path: Path, rows: list[str]) -> None:
    """Put `rows` into the Markdown table of `path`, replacing earlier rows of these figures, keeping all others."""
    header = "| figure | value | reference | ratio | goal | machine |\n|---|---|---|---|---|---|\n"
    text = path.read_text() if path.exists() else "# Benchmarks\n\n" + header
    names = [row.split("|")[1].strip().split(" (")[0] for row in rows]
    lines = [line for line in text.splitlines() if not any(line.startswith(f"| {name}") for name in names)]
    last_row = max(index for index, line in enumerate(lines) if line.startswith("|"))
    lines[last_row + 1:last_row + 1] = rows
    atomic_write_text(path, "\n".join(lines) + "\n")
    print(f"recorded in {path}", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="repeats per figure (median kept)")
    parser.add_argument("--record", type=Path, help="record the figures in this Markdown file (docs/benchmarks.md)")
    parser.add_argument("--chart-only", action="store_true", help="only the loss-chart redraw figure")
    args = parser.parse_args()
    if args.chart_only:
        row = chart_row(max(args.runs, 10))
        if args.record:
            record(args.record, [row])
        return 0
    rows = startup_rows(args.runs)
    rows.append(chart_row(max(args.runs, 10)))
    if args.record:
        record(args.record, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
