"""Concept scanning: find images, masks and caption files; read sizes from headers; remember them in a scan cache.

Sizes come from image headers (imagesize, which also applies the EXIF orientation); pixels are decoded
only to confirm a file whose tail looks cut off. A bad file never stops a scan: it becomes a SkippedFile
with its path and the reason. A scan notes which caption file belongs to each image but never reads one:
caption text is read when training starts (data.captions).
"""

from __future__ import annotations

import hashlib
import marshal
import os
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import imagesize

from tui_trainer.atomic import atomic_write_bytes
from tui_trainer.config.enums import CaptionSource
from tui_trainer.config.schema import ConceptConfig

IMAGE_EXTENSIONS = frozenset({".bmp", ".jpeg", ".jpg", ".png", ".webp"})
"""Image file extensions a scan takes (compared lower-case)."""
MASK_SUFFIX = "-masklabel.png"
"""`<stem>-masklabel.png` beside an image is that image's mask, not an image."""
MASK_STEM_SUFFIX = MASK_SUFFIX.removesuffix(".png")
CAPTION_EXTENSION = ".txt"
CACHE_FORMAT = 1
"""Bump when the cached facts change meaning; older cache files are then ignored."""


@dataclass(frozen=True)
class SkippedFile:
    """A file that looked like an image but cannot be trained on."""

    path: str
    reason: str


class ScannedImage(NamedTuple):
    """One usable image of a concept, before repeats (a tuple: a scan makes thousands of these)."""

    path: Path
    width: int
    """Displayed width (after the EXIF orientation)."""
    height: int
    caption_file: str
    """Name of its caption file in the same folder (caption_source = txt); '' when it has none."""
    mask_path: Path | None


@dataclass
class ConceptScan:
    """What a scan of one concept folder found."""

    images: list[ScannedImage] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ImageFormat:
    """How to recognise a format from its first bytes and tell, from its last bytes, that it is complete.

    Hand-written on purpose: imagesize reads sizes but not completeness, and PIL only finds a truncated
    file by decoding it; a cut-off file keeps a valid header, so the tail is where truncation shows.
    """

    name: str
    matches: Callable[[bytes], bool]
    complete: Callable[[bytes, bytes, int], bool]
    """(first 64 bytes, last 16 bytes, file size) -> whether the file looks whole."""


IMAGE_FORMATS = (
    ImageFormat("PNG", lambda head: head.startswith(b"\x89PNG\r\n\x1a\n"), lambda head, tail, size: tail.endswith(b"IEND\xaeB`\x82")),
    ImageFormat("JPEG", lambda head: head.startswith(b"\xff\xd8"), lambda head, tail, size: tail.rstrip(b"\x00").endswith(b"\xff\xd9")),
    ImageFormat(
        "WebP",
        lambda head: head[:4] == b"RIFF" and head[8:12] == b"WEBP",
        lambda head, tail, size: size >= int.from_bytes(head[4:8], "little") + 8,
    ),
    ImageFormat("BMP", lambda head: head[:2] == b"BM", lambda head, tail, size: size >= int.from_bytes(head[2:6], "little")),
)
FORMAT_NAMES = ", ".join(image_format.name for image_format in IMAGE_FORMATS[:-1]) + f" or {IMAGE_FORMATS[-1].name}"


def _pixel_limit() -> int | None:
    from PIL import Image

    return Image.MAX_IMAGE_PIXELS


def _decode_error(path: str) -> str:
    """Decode an image fully; the error text, or '' when it decodes. Only for files whose tail looks wrong."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
    except Exception as error:  # any decoder failure means the file is unusable
        return str(error) or type(error).__name__
    return ""


def _head_and_tail(path: str, size: int) -> tuple[bytes, bytes]:
    """The first 64 and last 16 bytes of a file (os-level reads: this runs once per image on a cold scan)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, 64, 0), os.pread(fd, 16, max(0, size - 16))
    finally:
        os.close(fd)


def _header_size(name: str, head: bytes) -> tuple[int, int] | None:
    """(width, height) of a PNG, BMP or WebP from its first 64 bytes, parsed exactly as imagesize 2 does; None for JPEG.

    For these three formats imagesize reads only the same 64 bytes and applies no EXIF orientation, so doing it
    here saves its buffered open and second read (most of a cold scan). JPEG keeps imagesize: its size and EXIF
    orientation can sit anywhere in the file. Raises like imagesize on a malformed header.
    """
    if name == "PNG":
        if len(head) < 26 or head[12:16] != b"IHDR":
            raise ValueError("Invalid PNG file")
        return struct.unpack(">LL", head[16:24])
    if name == "BMP":
        width, height = struct.unpack("<ll", head[18:26])
        return width, abs(height)
    if name == "WebP":
        if len(head) < 16:  # imagesize does not take it for WebP: no size
            return -1, -1
        chunk = head[12:16]
        if chunk == b"VP8 ":
            return struct.unpack("<HH", head[26:30])
        if chunk == b"VP8X":
            return struct.unpack("<I", head[24:27] + b"\0")[0] + 1, struct.unpack("<I", head[27:30] + b"\0")[0] + 1
        if chunk == b"VP8L":
            value = head[21:25]
            return (((value[1] & 63) << 8) | value[0]) + 1, (((value[3] & 15) << 10) | (value[2] << 2) | ((value[1] & 192) >> 6)) + 1
        raise ValueError("Unsupported WebP file")
    return None


def read_image_facts(path: str, size: int) -> tuple[int, int, str]:
    """(width, height, '') of an image from its header, or (0, 0, reason) when it cannot be used."""
    if size == 0:
        return 0, 0, "empty file (0 bytes)"
    try:
        head, tail = _head_and_tail(path, size)
    except PermissionError:
        return 0, 0, "permission denied: cannot open for reading"
    except OSError as error:
        return 0, 0, f"cannot read: {error.strerror or error}"
    image_format = next((candidate for candidate in IMAGE_FORMATS if candidate.matches(head)), None)
    if image_format is None:
        return 0, 0, f"not an image: content is not {FORMAT_NAMES}"
    try:
        dimensions = _header_size(image_format.name, head)
        if dimensions is None:
            info = imagesize.get_info(path, dpi=False, colors=False, channels=False)
            dimensions = info.width, info.height
    except Exception as error:  # imagesize raises several types on malformed headers
        return 0, 0, f"corrupt {image_format.name} header: {error}"
    width, height = dimensions
    if width <= 0 or height <= 0:
        return 0, 0, f"truncated or corrupt {image_format.name}: no size in the header"
    limit = _pixel_limit()
    if limit and width * height > limit:
        return 0, 0, (
            f"{width}x{height} = {width * height} pixels is over the "
            f"decompression-bomb limit of {limit} pixels (PIL.Image.MAX_IMAGE_PIXELS)"
        )
    if not image_format.complete(head, tail, size):
        error = _decode_error(path)
        if error:
            return 0, 0, f"truncated or corrupt {image_format.name}: {error}"
    return width, height, ""


class Listing(NamedTuple):
    """One directory's entries by role, sorted by name (hidden names, starting with '.', are left out)."""

    images: tuple[str, ...]
    stems: tuple[str, ...]
    """The stem of each image name."""
    masks: dict[str, str]
    """Image stem -> its mask file name."""
    captions: dict[str, str]
    """Stem -> caption file name."""
    subdirs: tuple[str, ...]
    orphan_masks: tuple[str, ...]
    """Mask files with no image of the same stem."""


def read_listing(path: str) -> Listing:
    """Split one directory's names into images, masks, captions and sub-folders."""
    images: list[str] = []
    stems: list[str] = []
    masks: dict[str, str] = {}
    captions: dict[str, str] = {}
    subdirs: list[str] = []
    with os.scandir(path) as entries:
        named = sorted((entry.name, entry) for entry in entries if not entry.name.startswith("."))
    for name, entry in named:
        stem, dot, extension = name.rpartition(".")
        extension = dot + extension.lower()
        if not dot:
            if entry.is_dir():
                subdirs.append(name)
        elif extension == ".png" and stem.lower().endswith(MASK_STEM_SUFFIX):
            masks[stem[: -len(MASK_STEM_SUFFIX)]] = name
        elif extension in IMAGE_EXTENSIONS:
            images.append(name)
            stems.append(stem)
        elif extension == CAPTION_EXTENSION:
            captions[stem] = name
        elif entry.is_dir():
            subdirs.append(name)
    image_stems = set(stems)
    orphans = tuple(name for stem, name in masks.items() if stem not in image_stems)
    kept_masks = {stem: name for stem, name in masks.items() if stem in image_stems}
    return Listing(tuple(images), tuple(stems), kept_masks, captions, tuple(subdirs), orphans)


RACY_WINDOW_NS = 2_000_000_000
"""A folder's listing is cached only once its mtime is this much older than the listing, since a change
within the same timestamp tick (up to 2 s on FAT) would leave the mtime unchanged."""


class ScanCache:
    """Facts about one folder's files keyed by relative path + size + mtime, kept in the workspace cache dir.

    Images map to (size, mtime_ns, width, height, reason), directories to (mtime_ns, *Listing): adding,
    removing or renaming a file changes its folder's mtime.
    Stored with marshal: a 10,000-image cache loads in milliseconds (several times faster than JSON), and it
    is private to this program, so a Python-version change only means one cold rescan.
    """

    _loaded: dict[str, tuple[tuple[int, int], dict]] = {}
    _memos: dict[tuple[str, bool], tuple[tuple, list[tuple[str, int, int]], ConceptScan]] = {}
    _lock = threading.Lock()

    def __init__(self, file: Path | None, root: str):
        self.file = file
        self.root = root
        self.old: dict[str, dict] = self._load(file, root) if file is not None else {}
        self.new: dict[str, dict] = {"dirs": {}, "files": {}}
        self.error = ""
        self.now_ns = time.time_ns()
        self.checks: list[tuple[str, int, int]] = []
        """(path, size, mtime_ns) of every folder and image this scan looked at; -1, -1 where stat failed."""
        self.racy = False
        """Whether something changed within RACY_WINDOW_NS of this scan, so its result is not memoised."""

    def stat(self, path: str) -> os.stat_result:
        """os.stat (raising OSError like it), noting the file in `checks` for the memo of this scan's result."""
        try:
            result = os.stat(path)
        except OSError:
            self.checks.append((path, -1, -1))
            raise
        self.checks.append((path, result.st_size, result.st_mtime_ns))
        return result

    def _settled(self, mtime_ns: int) -> bool:
        """Whether a file is old enough that a same-size rewrite would show in its mtime."""
        settled = self.now_ns - mtime_ns >= RACY_WINDOW_NS
        self.racy |= not settled
        return settled

    def recall(self, include_subdirs: bool, settings: tuple) -> ConceptScan | None:
        """The result of the last scan of this folder with these settings, if no file it looked at changed."""
        if self.file is None:
            return None
        with self._lock:
            memo = self._memos.get((str(self.file), include_subdirs))
        if memo is None or memo[0] != settings:
            return None
        stat = os.stat
        for path, size, mtime_ns in memo[1]:
            try:
                now = stat(path)
            except OSError:
                if size == -1:
                    continue
                return None
            if now.st_size != size or now.st_mtime_ns != mtime_ns:
                return None
        return memo[2]

    def remember(self, include_subdirs: bool, settings: tuple, result: ConceptScan) -> None:
        """Memoise a scan result in memory (only when nothing was racy and the cache file was written)."""
        if self.file is not None and not self.racy and not self.error:
            with self._lock:
                self._memos[(str(self.file), include_subdirs)] = (settings, self.checks, result)

    @classmethod
    def for_folder(cls, cache_dir: Path | None, root: str) -> ScanCache:
        """The cache of folder `root` under `cache_dir` (None: an empty cache that is never written)."""
        if cache_dir is None:
            return cls(None, root)
        name = hashlib.sha256(root.encode("utf-8", "surrogateescape")).hexdigest()[:20]
        return cls(cache_dir / "scan" / f"{name}.marshal", root)

    @classmethod
    def _load(cls, file: Path, root: str) -> dict[str, dict]:
        try:
            stat = os.stat(file)
        except OSError:
            return {}
        key = str(file)
        stamp = (stat.st_size, stat.st_mtime_ns)
        with cls._lock:
            remembered = cls._loaded.get(key)
        if remembered is not None and remembered[0] == stamp:
            return remembered[1]
        try:
            document = marshal.loads(file.read_bytes())
            if document["format"] != CACHE_FORMAT or document["root"] != root:
                return {}
            tables = {name: document[name] for name in ("dirs", "files")}
        except (OSError, EOFError, ValueError, TypeError, KeyError):
            return {}
        with cls._lock:
            cls._loaded[key] = (stamp, tables)
        return tables

    def listing(self, relative: str, path: str, mtime_ns: int) -> Listing:
        """A directory's listing: from the cache when its mtime matches, else read (and cached when not racy)."""
        cached = self.old.get("dirs", {}).get(relative)
        if cached is None or cached[0] != mtime_ns:
            cached = (mtime_ns, *read_listing(path))
        if self._settled(mtime_ns):
            self.new["dirs"][relative] = cached
        return Listing(*cached[1:])

    def image(self, relative: str, path: str, size: int, mtime_ns: int) -> tuple[int, int, str]:
        """(width, height, reason) of an image file: from the cache when size and mtime match, else read."""
        cached = self.old.get("files", {}).get(relative)
        if cached is None or cached[0] != size or cached[1] != mtime_ns:
            cached = (size, mtime_ns, *read_image_facts(path, size))
        if self._settled(mtime_ns):
            self.new["files"][relative] = cached
        return cached[2], cached[3], cached[4]

    def save(self) -> None:
        """Write the cache (atomically) if this scan saw anything new, changed or gone; failures become self.error."""
        if self.file is None or self.new == self.old:
            return
        document = {"format": CACHE_FORMAT, "root": self.root, **self.new}
        try:
            atomic_write_bytes(self.file, marshal.dumps(document))
            stat = os.stat(self.file)
        except OSError as error:
            self.error = f"scan cache {str(self.file)!r} not written: {error.strerror or error}"
            return
        with self._lock:
            self._loaded[str(self.file)] = ((stat.st_size, stat.st_mtime_ns), self.new)


def _walk(root: str, recursive: bool, cache: ScanCache) -> Iterator[tuple[str, str, Listing]]:
    """(directory, relative prefix, listing) of `root` and, when recursive, of every sub-folder once."""
    seen: set[tuple[int, int]] = set()
    pending = [(root, "")]
    while pending:
        path, prefix = pending.pop()
        stat = cache.stat(path)
        if (stat.st_dev, stat.st_ino) in seen:
            continue
        seen.add((stat.st_dev, stat.st_ino))
        listing = cache.listing(prefix, path, stat.st_mtime_ns)
        yield path, prefix, listing
        if recursive:
            pending += [(os.path.join(path, name), f"{prefix}{name}{os.sep}") for name in reversed(listing.subdirs)]


def _stat_error(path: str, error: OSError) -> str:
    if isinstance(error, FileNotFoundError) and os.path.islink(path):
        return f"broken symlink: target {os.readlink(path)!r} does not exist"
    return f"cannot read file information: {error.strerror or error}"


def concept_label(concept: ConceptConfig, index: int) -> str:
    """How messages name a concept: "concept 'dog' (concepts[0])"."""
    return f"concept {concept.name!r} (concepts[{index}])"


def scan_concept(concept: ConceptConfig, folder: Path, cache: ScanCache, index: int = 0) -> ConceptScan:
    """Scan one concept folder: usable images with sizes, masks and caption files; bad files with reasons.

    A missing folder, or a folder without any usable image, is an error naming the concept. An unchanged
    folder gives back the same (shared, read-only) result object.
    """
    result = ConceptScan()
    label = concept_label(concept, index)
    root = str(folder)
    if not folder.is_dir():
        result.errors.append(f"{label}: folder {root!r} does not exist")
        return result
    settings = (concept.caption_source is CaptionSource.TXT, label)
    remembered = cache.recall(concept.include_subdirs, settings)
    if remembered is not None:
        return remembered
    _scan_files(result, concept, root, cache, label)
    cache.remember(concept.include_subdirs, settings, result)
    return result


def _scan_files(result: ConceptScan, concept: ConceptConfig, root: str, cache: ScanCache, label: str) -> None:
    """Fill `result` from the folder's files, through the cache; then save the cache."""
    uncaptioned: list[str] = []
    orphan_masks: list[str] = []
    with_caption_files = concept.caption_source is CaptionSource.TXT
    # The per-image work below is inlined (what ScanCache.stat / image do): a warm scan is mostly this
    # loop, and method calls, Path parsing and repeated attribute look-ups were most of its time.
    stat = os.stat
    check = cache.checks.append
    old_files = cache.old.get("files", {})
    new_files = cache.new["files"]
    settled_before = cache.now_ns - RACY_WINDOW_NS
    images = result.images
    skipped = result.skipped
    for directory, prefix, listing in _walk(root, concept.include_subdirs, cache):
        folder = Path(directory)
        child = getattr(folder, "_make_child_relpath", folder.joinpath)  # 3.11's cheap child path (no re-parsing)
        directory += os.sep
        caption_files = listing.captions if with_caption_files else {}
        masks = listing.masks
        for name, stem in zip(listing.images, listing.stems):
            path = directory + name
            try:
                info = stat(path)
            except OSError as error:
                check((path, -1, -1))
                skipped.append(SkippedFile(path, _stat_error(path, error)))
                continue
            size = info.st_size
            mtime_ns = info.st_mtime_ns
            check((path, size, mtime_ns))
            relative = prefix + name
            cached = old_files.get(relative)
            if cached is None or cached[0] != size or cached[1] != mtime_ns:
                cached = (size, mtime_ns, *read_image_facts(path, size))
            if mtime_ns <= settled_before:
                new_files[relative] = cached
            else:
                cache.racy = True
            if cached[4]:
                skipped.append(SkippedFile(path, cached[4]))
                continue
            caption_file = caption_files.get(stem, "")
            if with_caption_files and not caption_file:
                uncaptioned.append(relative)
            mask = masks.get(stem)
            images.append(ScannedImage(child(name), cached[2], cached[3], caption_file, child(mask) if mask else None))
        orphan_masks += [prefix + name for name in listing.orphan_masks]

    cache.save()
    _add_warnings(result, label, uncaptioned, orphan_masks, cache.error)
    if not result.images:
        extensions = ", ".join(sorted(IMAGE_EXTENSIONS))
        bad = f" ({len(result.skipped)} bad files skipped)" if result.skipped else ""
        result.errors.append(f"{label}: folder {root!r} has no usable images{bad}; allowed extensions: {extensions}")


def examples(names: list[str]) -> str:
    """The first three names, quoted, and '...' when there are more (for warnings about many files)."""
    shown = ", ".join(repr(name) for name in names[:3])
    return shown + (", ..." if len(names) > 3 else "")


def _add_warnings(result: ConceptScan, label: str, uncaptioned: list[str], orphan_masks: list[str], cache_error: str) -> None:
    if uncaptioned:
        result.warnings.append(
            f"{label}: {len(uncaptioned)} images have no {CAPTION_EXTENSION} caption ({examples(uncaptioned)}); "
            "they train with only the caption prefix/suffix"
        )
    if orphan_masks:
        result.warnings.append(f"{label}: {len(orphan_masks)} mask files have no image ({examples(orphan_masks)})")
    if cache_error:
        result.warnings.append(f"{label}: {cache_error}")
