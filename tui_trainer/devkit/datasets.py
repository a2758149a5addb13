"""Synthetic captioned image datasets (and deliberately broken files) for tests and the demo."""

from __future__ import annotations

import os
import random
from collections.abc import Iterable
from pathlib import Path

from PIL import Image, ImageDraw

BROKEN_KINDS = ("zero_byte", "truncated", "not_an_image", "decompression_bomb", "unreadable", "broken_symlink")
"""Kinds of bad file `make_dataset` can add."""

_WORDS = ("red", "blue", "green", "circle", "square", "stripe", "dog", "cat", "tree", "house", "sky", "sea")


def _picture(width: int, height: int, rng: random.Random) -> Image.Image:
    image = Image.new("RGB", (width, height), tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        x1, y1 = x0 + rng.randrange(1, width), y0 + rng.randrange(1, height)
        draw.ellipse((x0, y0, x1, y1), fill=tuple(rng.randrange(256) for _ in range(3)))
    return image


def _write_broken(folder: Path, kind: str) -> Path:
    path = folder / f"broken_{kind}.png"
    if kind == "zero_byte":
        path.write_bytes(b"")
    elif kind == "truncated":
        full = folder / "tmp_full.png"
        _picture(64, 64, random.Random(0)).save(full)
        path.write_bytes(full.read_bytes()[:40])
        full.unlink()
    elif kind == "not_an_image":
        path.write_text("this is not a picture\n")
    elif kind == "decompression_bomb":
        Image.new("1", (20000, 20000)).save(path, optimize=True)
    elif kind == "unreadable":
        _picture(64, 64, random.Random(1)).save(path)
        path.chmod(0)
    elif kind == "broken_symlink":
        os.symlink(folder / "does-not-exist.png", path)
    else:
        raise ValueError(f"unknown broken kind {kind!r}; allowed: {', '.join(BROKEN_KINDS)}")
    return path


def make_dataset(
    folder: str | Path,
    sizes: Iterable[tuple[int, int, int]] = ((64, 64, 4),),
    *,
    captions: bool = True,
    broken: Iterable[str] = (),
    masks: bool = False,
    seed: int = 0,
    image_format: str = "png",
) -> Path:
    """Write images as (width, height, count) groups, with .txt captions, optional masks and bad files."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    index = 0
    for width, height, count in sizes:
        for _ in range(count):
            stem = f"img_{index:04d}_{width}x{height}"
            _picture(width, height, rng).save(folder / f"{stem}.{image_format}")
            if captions:
                tags = rng.sample(_WORDS, 3)
                (folder / f"{stem}.txt").write_text(", ".join(tags) + "\n")
            if masks:
                mask = Image.new("L", (width, height), 0)
                ImageDraw.Draw(mask).rectangle((0, 0, width // 2, height // 2), fill=255)
                mask.save(folder / f"{stem}-masklabel.png")
            index += 1
    for kind in broken:
        _write_broken(folder, kind)
    return folder


def make_exif_rotated(path: str | Path, stored_width: int, stored_height: int, orientation: int = 6) -> Path:
    """A JPEG stored as WxH with an EXIF orientation tag (6 = rotate 90 degrees: shown as HxW)."""
    path = Path(path)
    image = _picture(stored_width, stored_height, random.Random(7))
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.save(path, format="JPEG", exif=exif.tobytes())
    return path
