"""The latest sample images with their prompts (kitty/sixel where the terminal has it, else half-blocks)."""

from __future__ import annotations

from PIL import Image as PILImage
from PIL import UnidentifiedImageError
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widget import Widget
from textual.widgets import Static

from tui_trainer.runs.summary import Sample
from tui_trainer.tui.graphics import image_widget_class

DEFAULT_SIZE = (34, 30)
"""Room for images (cells) before the view has been laid out."""


class SampleView(VerticalScroll):
    """Shows one sample set; `show` replaces it when the set changed (or an image could not be read yet)."""

    DEFAULT_CSS = """
    SampleView { width: 36; height: 1fr; border: round $primary 50%; }
    SampleView .sample-prompt { color: $text-muted; margin-bottom: 1; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.samples: list[Sample] = []
        self.failed = False

    def compose(self) -> ComposeResult:
        yield Static("no samples yet", classes="sample-prompt")

    def on_mount(self) -> None:
        self.border_title = "Latest sample"

    def _image(self, image: PILImage.Image, count: int) -> Widget:
        """An image widget sized so `count` images and their prompts share the view (cells are ~1:2)."""
        width = max(8, self.content_size.width or DEFAULT_SIZE[0])
        rows = max(4, (self.content_size.height or DEFAULT_SIZE[1]) // count - 2)
        height = round(width * image.height / image.width / 2)
        if height > rows:
            width, height = max(4, round(rows * 2 * image.width / image.height)), rows
        widget = image_widget_class()(image)
        widget.styles.width = width
        widget.styles.height = max(1, height)
        return widget

    async def show(self, samples: list[Sample]) -> None:
        """Display `samples` (a no-op when they are the ones shown)."""
        if not self.failed and [(s.path, s.prompt) for s in samples] == [(s.path, s.prompt) for s in self.samples]:
            return
        self.samples = samples
        self.border_title = f"Latest sample (step {samples[0].step})" if samples else "Latest sample"
        widgets: list[Widget] = []
        self.failed = False
        for sample in samples:
            try:
                with PILImage.open(sample.path) as image:
                    widgets.append(self._image(image.convert("RGB"), len(samples)))
            except (OSError, UnidentifiedImageError) as error:
                self.failed = True
                widgets.append(Static(f"{sample.path.name}: {error}"))
            widgets.append(Static(f'"{sample.prompt}"' if sample.prompt else sample.path.name, classes="sample-prompt"))
        await self.remove_children()
        await self.mount_all(widgets or [Static("no samples yet", classes="sample-prompt")])
