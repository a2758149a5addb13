"""One image as an epoch trains it: what bucketing, the dataset report and caption reading share."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class ImageItem:
    """One image as trained in an epoch (an image with repeats = 2 is two items)."""

    path: Path
    width: int
    """Displayed width after the EXIF orientation."""
    height: int
    concept_index: int
    """Index of its concept in config.concepts."""
    mask_path: Path | None
    bucket: tuple[int, int]
    """(width, height) of its bucket."""
    caption_file: str = ""
    """Name of its caption file beside it (caption_source = txt); '' when it has none. Read by read_captions."""
    caption_choices: tuple[str, ...] = ()
    """All prompts-file captions (with prefix/suffix) for caption_source = prompts_file; one is picked per step."""

    @property
    def caption_path(self) -> Path | None:
        """Its caption file, or None."""
        return self.path.with_name(self.caption_file) if self.caption_file else None
