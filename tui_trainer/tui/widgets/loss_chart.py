"""The loss chart: raw and smoothed loss by step, downsampled to the widget's pixel columns."""

from __future__ import annotations

from array import array
from bisect import bisect_left

import numpy as np
from textual.app import ComposeResult
from textual.css.query import NoMatches
from textual.widget import Widget
from textual_plot import HiResMode, PlotWidget

PIXELS_PER_CELL = 2
"""Braille characters are 2 pixels wide."""


def downsample_minmax(x: np.ndarray, y: np.ndarray, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel column of x: the min and the max of y (so single spikes stay visible); as is when it fits."""
    if columns < 1 or len(x) <= 2 * columns:
        return x, y
    bins = _bins(x, columns)
    starts = np.flatnonzero(np.r_[True, bins[1:] != bins[:-1]])
    ends = np.r_[starts[1:], len(x)] - 1
    xs = np.empty(2 * len(starts))
    ys = np.empty(2 * len(starts))
    xs[0::2], xs[1::2] = x[starts], x[ends]
    ys[0::2], ys[1::2] = np.minimum.reduceat(y, starts), np.maximum.reduceat(y, starts)
    return xs, ys


def downsample_mean(x: np.ndarray, y: np.ndarray, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel column of x: the mean of x and of y; as is when it fits."""
    if columns < 1 or len(x) <= columns:
        return x, y
    bins = _bins(x, columns)
    starts = np.flatnonzero(np.r_[True, bins[1:] != bins[:-1]])
    counts = np.diff(np.r_[starts, len(x)])
    return np.add.reduceat(x, starts) / counts, np.add.reduceat(y, starts) / counts


def _bins(x: np.ndarray, columns: int) -> np.ndarray:
    span = float(x[-1] - x[0]) or 1.0
    return np.minimum(((x - x[0]) * (columns / span)).astype(np.int64), columns - 1)


class LossChart(Widget):
    """Raw loss (dim, min/max per column) and smoothed loss (bright, mean per column) against the step."""

    DEFAULT_CSS = """
    LossChart { width: 1fr; height: 1fr; border: round $primary 50%; }
    LossChart PlotWidget { height: 1fr; }
    """

    RAW_STYLE = "grey50"
    SMOOTH_STYLE = "bold cyan"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.steps = array("d")
        self.raw = array("d")
        self.smoothed = array("d")
        self.drawn_points = 0
        self._shown: tuple[int, int, float] | None = None

    def compose(self) -> ComposeResult:
        yield PlotWidget(allow_pan_and_zoom=False)

    def on_mount(self) -> None:
        self.border_title = "Loss (raw · / smoothed —)"
        plot = self.query_one(PlotWidget)
        plot.can_focus = False
        plot.margin_top = 0
        plot.margin_bottom = 2
        plot.margin_left = 8

    @property
    def points(self) -> int:
        """Steps on the chart."""
        return len(self.steps)

    def add(self, step: float, loss: float, smoothed: float | None) -> None:
        """Add one step; a step at or before the last one (a resumed run) replaces the history from there."""
        if self.steps and step <= self.steps[-1]:
            cut = bisect_left(self.steps, step)
            del self.steps[cut:], self.raw[cut:], self.smoothed[cut:]
        self.steps.append(step)
        self.raw.append(loss)
        self.smoothed.append(loss if smoothed is None else smoothed)

    def on_resize(self) -> None:
        self.redraw()

    @property
    def columns(self) -> int:
        """Pixel columns inside the plot's axes."""
        try:
            canvas = self.query_one(PlotWidget).query_one("#plot")
        except NoMatches:
            return 0
        return max(0, canvas.size.width - 2) * PIXELS_PER_CELL

    def redraw(self, *, force: bool = False) -> None:
        """Plot the current history (only when it or the width changed, unless forced)."""
        columns = self.columns
        if not columns or not self.steps:
            return
        state = (len(self.steps), columns, self.steps[-1])
        if state == self._shown and not force:
            return
        self._shown = state
        steps = np.frombuffer(self.steps, dtype=np.float64)
        raw_x, raw_y = downsample_minmax(steps, np.frombuffer(self.raw, dtype=np.float64), columns)
        smooth_x, smooth_y = downsample_mean(steps, np.frombuffer(self.smoothed, dtype=np.float64), columns)
        plot = self.query_one(PlotWidget)
        plot.clear()
        plot.plot(raw_x, raw_y, line_style=self.RAW_STYLE, hires_mode=HiResMode.BRAILLE)
        plot.plot(smooth_x, smooth_y, line_style=self.SMOOTH_STYLE, hires_mode=HiResMode.BRAILLE)
        self.drawn_points = len(raw_x) + len(smooth_x)
        last = self.raw[-1]
        self.border_subtitle = f"{len(self.steps)} steps · last {last:.4f} · avg {self.smoothed[-1]:.4f}"
