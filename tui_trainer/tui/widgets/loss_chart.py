"""The loss chart: raw and smoothed loss by step, downsampled to the widget's braille pixel columns.

With more steps than pixel columns, the raw loss becomes a band: the min..max of each pixel column, drawn
with numpy straight into braille cells (single spikes stay visible, and 100,000 steps cost what 400 do).
The smoothed loss is the mean of each pixel column, drawn on top by textual-plot, and the validation loss (a few
points) on top of that.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from contextlib import ExitStack

import numpy as np
from textual.app import ComposeResult, RenderResult
from textual.css.query import NoMatches
from textual.widget import Widget
from textual_plot import HiResMode, PlotWidget

PIXELS = (2, 4)
"""Braille pixels per character cell (columns, rows)."""

BRAILLE_DOTS = np.array([[0x01, 0x08], [0x02, 0x10], [0x04, 0x20], [0x40, 0x80]])
"""Bit of each dot in a braille cell, by (pixel row, pixel column); the character is U+2800 + bits."""

Band = tuple[np.ndarray, np.ndarray, np.ndarray]
"""(x, low, high) per pixel column."""


def _bins(x: np.ndarray, columns: int) -> np.ndarray:
    """Start index of each non-empty column when x (ascending) is split into `columns` equal spans."""
    span = float(x[-1] - x[0]) or 1.0
    column = np.minimum(((x - x[0]) * (columns / span)).astype(np.int64), columns - 1)
    return np.flatnonzero(np.r_[True, column[1:] != column[:-1]])


def column_extremes(x: np.ndarray, y: np.ndarray, columns: int) -> Band:
    """Per column of x: its middle x, and the min and max of y."""
    starts = _bins(x, columns)
    ends = np.r_[starts[1:], len(x)] - 1
    return (x[starts] + x[ends]) / 2, np.minimum.reduceat(y, starts), np.maximum.reduceat(y, starts)


def column_means(x: np.ndarray, y: np.ndarray, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """Per column of x: the mean of x and of y; as is when it fits."""
    if len(x) <= columns:
        return x, y
    starts = _bins(x, columns)
    counts = np.diff(np.r_[starts, len(x)])
    return np.add.reduceat(x, starts) / counts, np.add.reduceat(y, starts) / counts


def band_rows(columns: np.ndarray, top: np.ndarray, bottom: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """First and last pixel row of each of `width` pixel columns (empty: first > last), gaps to the
    neighbouring column closed so the band stays connected."""
    first = np.full(width, np.iinfo(np.int64).max)
    last = np.full(width, -1)
    np.minimum.at(first, columns, top)
    np.maximum.at(last, columns, bottom)
    filled = last >= 0
    joined = filled & np.r_[False, filled[:-1]]
    previous_first, previous_last = np.r_[first[:1], first[:-1]], np.r_[last[:1], last[:-1]]
    first = np.where(joined, np.minimum(first, previous_last + 1), first)
    last = np.where(joined, np.maximum(last, previous_first - 1), last)
    return first, last


def braille_cells(first: np.ndarray, last: np.ndarray, rows: int) -> np.ndarray:
    """Braille bits per cell (rows x pixel columns / 2) of pixel columns filled from row `first` to `last`."""
    pixel_rows = np.arange(rows * PIXELS[1])[:, None]
    filled = (pixel_rows >= first[None, :]) & (pixel_rows <= last[None, :])
    return np.einsum("rycx,yx->rc", filled.reshape(rows, PIXELS[1], -1, PIXELS[0]), BRAILLE_DOTS)


class LossPlot(PlotWidget):
    """A PlotWidget that also paints a min/max band, and repaints its canvases once per redraw."""

    band: Band | None = None
    band_style = "grey50"

    def render(self) -> RenderResult:
        with ExitStack() as stack:
            for canvas in self.query("Canvas"):
                stack.enter_context(canvas.batch_refresh())
            result = super().render()
            if self.band is not None:
                self._paint_band(self.band)
        return result

    def _paint_band(self, band: Band) -> None:
        """Braille cells for the band inside the axes, leaving cells already drawn (the smoothed line) alone."""
        canvas = self.query_one("#plot")
        width, height = canvas.size
        if width < 3 or height < 3:
            return
        x, low, high = band
        hx, bottom = self.get_hires_pixel_from_coordinate(x, low)
        _, top = self.get_hires_pixel_from_coordinate(x, high)
        columns = np.floor(hx * PIXELS[0]).astype(np.int64)
        inside = (columns >= PIXELS[0]) & (columns < (width - 1) * PIXELS[0])
        first, last = band_rows(columns[inside], np.floor(top[inside] * PIXELS[1]).astype(np.int64),
                                np.floor(bottom[inside] * PIXELS[1]).astype(np.int64), width * PIXELS[0])
        first = np.maximum(first, PIXELS[1])
        last = np.minimum(last, (height - 1) * PIXELS[1] - 1)
        cells = braille_cells(first, last, height)
        for bits in np.unique(cells[cells > 0]).tolist():
            rows, cols = np.nonzero(cells == bits)
            free = [(col, row) for col, row in zip(cols.tolist(), rows.tolist(), strict=True)
                    if canvas.get_pixel(col, row)[0] == " "]
            canvas.set_pixels(free, chr(0x2800 + bits), self.band_style)


class LossChart(Widget):
    """Raw loss (dim: line, or min/max band when dense) and smoothed loss (bright) against the step."""

    DEFAULT_CSS = """
    LossChart { width: 1fr; height: 1fr; border: round $primary 50%; }
    LossChart LossPlot { height: 1fr; }
    """

    RAW_STYLE = "grey50"
    SMOOTH_STYLE = "bold cyan"
    VALIDATION_STYLE = "bold magenta"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.steps = array("d")
        self.raw = array("d")
        self.smoothed = array("d")
        self.validation_steps = array("d")
        self.validation = array("d")
        self.drawn_points = 0
        self._shown: tuple[int, int, float] | None = None

    def compose(self) -> ComposeResult:
        yield LossPlot(allow_pan_and_zoom=False)

    def on_mount(self) -> None:
        self.border_title = "Loss (raw · / smoothed — / validation ━)"
        plot = self.query_one(LossPlot)
        plot.can_focus = False
        plot.band_style = self.RAW_STYLE
        plot.margin_top = 0
        plot.margin_bottom = 2
        plot.margin_left = 8

    @property
    def points(self) -> int:
        """Steps on the chart."""
        return len(self.steps)

    def add(self, step: float, loss: float, smoothed: float | None) -> None:
        """Add one step; a step at or before the last one (a resumed run) replaces the history from there."""
        self.truncate(step - 1)
        self.steps.append(step)
        self.raw.append(loss)
        self.smoothed.append(loss if smoothed is None else smoothed)

    def add_validation(self, step: float, loss: float) -> None:
        """Add one validation loss; one at or before the last one (a resumed run) replaces the history from there."""
        if self.validation_steps and self.validation_steps[-1] >= step:
            cut = bisect_left(self.validation_steps, step)
            del self.validation_steps[cut:], self.validation[cut:]
        self.validation_steps.append(step)
        self.validation.append(loss)

    def truncate(self, last_step: float) -> None:
        """Forget the steps after `last_step` (a run resumed from the backup of that step)."""
        if self.steps and self.steps[-1] > last_step:
            cut = bisect_left(self.steps, last_step + 1)
            del self.steps[cut:], self.raw[cut:], self.smoothed[cut:]
        if self.validation_steps and self.validation_steps[-1] > last_step:
            cut = bisect_left(self.validation_steps, last_step + 1)
            del self.validation_steps[cut:], self.validation[cut:]

    def on_resize(self) -> None:
        self.redraw()

    @property
    def columns(self) -> int:
        """Braille pixel columns inside the plot's axes."""
        try:
            canvas = self.query_one(LossPlot).query_one("#plot")
        except NoMatches:
            return 0
        return max(0, canvas.size.width - 2) * PIXELS[0]

    def redraw(self, *, force: bool = False) -> None:
        """Plot the current history (only when it or the width changed, unless forced)."""
        columns = self.columns
        if not columns or not self.steps:
            return
        state = (len(self.steps), columns, self.steps[-1], len(self.validation))
        if state == self._shown and not force:
            return
        self._shown = state
        steps = np.frombuffer(self.steps, dtype=np.float64)
        raw = np.frombuffer(self.raw, dtype=np.float64)
        smooth_x, smooth_y = column_means(steps, np.frombuffer(self.smoothed, dtype=np.float64), columns)
        plot = self.query_one(LossPlot)
        plot.clear()
        if len(steps) > 1:
            plot.set_xlimits(float(steps[0]), float(steps[-1]))
        validation_x = np.frombuffer(self.validation_steps, dtype=np.float64)
        validation_y = np.frombuffer(self.validation, dtype=np.float64)
        low, high = min(raw.min(), smooth_y.min()), max(raw.max(), smooth_y.max())
        if len(validation_y):
            low, high = min(low, validation_y.min()), max(high, validation_y.max())
        plot.set_ylimits(float(low), float(high))
        if len(steps) > columns:
            plot.band = column_extremes(steps, raw, columns)
            self.drawn_points = 2 * len(plot.band[0]) + len(smooth_x)
        else:
            plot.band = None
            plot.plot(steps.copy(), raw.copy(), line_style=self.RAW_STYLE, hires_mode=HiResMode.BRAILLE)
            self.drawn_points = len(steps) + len(smooth_x)
        plot.plot(smooth_x, smooth_y, line_style=self.SMOOTH_STYLE, hires_mode=HiResMode.BRAILLE)
        if len(validation_y):
            plot.plot(validation_x.copy(), validation_y.copy(), line_style=self.VALIDATION_STYLE, hires_mode=HiResMode.BRAILLE)
            self.drawn_points += len(validation_y)
        validation = f" · val {self.validation[-1]:.4f}" if self.validation else ""
        self.border_subtitle = f"{len(self.steps)} steps · last {self.raw[-1]:.4f} · avg {self.smoothed[-1]:.4f}{validation}"
