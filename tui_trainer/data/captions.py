"""Caption text: a `.txt` file beside the image, its file name, or a line of a prompts file.

A scan only notes which caption file belongs to each image (from the folder listing); the text is read once,
when training starts, by read_captions: an edited caption is what the next run trains with, and rescans
never open caption files. The dataset report reads the prompts file (a missing or empty one is an error).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from tui_trainer.config.enums import CaptionSource
from tui_trainer.config.schema import ConceptConfig
from tui_trainer.data.items import ImageItem
from tui_trainer.data.scan import concept_label, examples


def format_caption(concept: ConceptConfig, text: str) -> str:
    """prefix + text (whitespace runs collapsed to one space) + suffix, without outer whitespace."""
    return f"{concept.caption_prefix}{' '.join(text.split())}{concept.caption_suffix}".strip()


def read_prompts(concept: ConceptConfig, path: Path | None) -> tuple[tuple[str, ...], str]:
    """(the prompts file's captions with prefix/suffix, error text or '')."""
    if path is None:
        return (), "caption_source = 'prompts_file' needs prompts_file"
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as error:
        return (), f"prompts_file {str(path)!r} cannot be read: {error.strerror or error}"
    captions = tuple(format_caption(concept, line) for line in lines if line.strip())
    return captions, "" if captions else f"prompts_file {str(path)!r} has no captions (one per line)"


class FileWarning(NamedTuple):
    """A warning about some files: the message (naming up to three) and every file's path."""

    message: str
    paths: list[str]


@dataclass
class Captions:
    """The caption choices of training items, read by read_captions."""

    choices: dict[tuple[int, Path], tuple[str, ...]] = field(default_factory=dict)
    """(concept index, image path) -> its captions with prefix/suffix: one, or every prompts-file line."""
    warnings: list[FileWarning] = field(default_factory=list)
    """Caption files that are not UTF-8 or cannot be read, per concept."""

    def of(self, item: ImageItem) -> tuple[str, ...]:
        """An item's caption choices (one is picked per step when there are several)."""
        return self.choices[(item.concept_index, item.path)]


def read_captions(items: Iterable[ImageItem], concepts: list[ConceptConfig]) -> Captions:
    """The captions of report items (ImageItem): each caption file read once, bad bytes replaced.

    caption_source txt: the item's caption file (none: the prefix/suffix alone, which the scan already
    warned about); filename: the image's name without its extension; prompts_file: the item's caption_choices.
    A caption file that is not UTF-8, or cannot be read (it trains with the prefix/suffix alone), is one warning
    per concept naming the files.
    """
    captions = Captions()
    not_utf8: dict[int, list[str]] = {}
    unreadable: dict[int, list[str]] = {}
    first_error: dict[int, str] = {}
    for item in items:
        key = (item.concept_index, item.path)
        if key in captions.choices:
            continue
        concept = concepts[item.concept_index]
        if item.caption_choices:
            captions.choices[key] = item.caption_choices
            continue
        text = ""
        if concept.caption_source is CaptionSource.FILENAME:
            text = item.path.stem
        elif item.caption_path is not None:
            try:
                data = item.caption_path.read_bytes()
            except OSError as error:
                unreadable.setdefault(item.concept_index, []).append(str(item.caption_path))
                first_error.setdefault(item.concept_index, str(error.strerror or error))
            else:
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError:
                    text = data.decode("utf-8", "replace")
                    not_utf8.setdefault(item.concept_index, []).append(str(item.caption_path))
        captions.choices[key] = (format_caption(concept, text),)
    for index, paths in not_utf8.items():
        label = concept_label(concepts[index], index)
        captions.warnings.append(FileWarning(
            f"{label}: {len(paths)} caption files are not UTF-8 ({examples(paths)}); bad bytes were replaced", paths))
    for index, paths in unreadable.items():
        label = concept_label(concepts[index], index)
        captions.warnings.append(FileWarning(
            f"{label}: {len(paths)} caption files cannot be read ({examples(paths)}): {first_error[index]}; "
            "those images train with only the caption prefix/suffix", paths))
    return captions
