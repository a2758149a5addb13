"""Concept scanning: find images, masks and caption files; read sizes from headers; remember them in a scan cache.

Sizes come from image headers (parsed here for PNG, BMP and WebP; imagesize for JPEG, which also applies
the EXIF orientation); pixels are decoded only to confirm a file whose tail looks cut off. A bad file never
stops a scan: it becomes a SkippedFile with its path and the reason. A scan notes which caption file
belongs to each image but never reads one: caption text is read when training starts (data.captions).
"""

from __future__ import annotations

import hashlib
import io
import marshal
import os
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import repeat
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
CACHE_FORMAT = 2
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
    magic: bytes
    """Its first two bytes (different for every format)."""
    matches: Callable[[bytes], bool]
    """(first 64 bytes, which start with `magic`) -> whether the file is of this format."""
    complete: Callable[[bytes, bytes, int], bool]
    """(first 64 bytes, last 16 bytes, file size) -> whether the file looks whole."""


IMAGE_FORMATS = (
    ImageFormat("PNG", b"\x89P", lambda head: head.startswith(b"\x89PNG\r\n\x1a\n"), lambda head, tail, size: tail.endswith(b"IEND\xaeB`\x82")),
    ImageFormat("JPEG", b"\xff\xd8", lambda head: True, lambda head, tail, size: tail.rstrip(b"\x00").endswith(b"\xff\xd9")),
    ImageFormat(
        "WebP",
        b"RI",
        lambda head: head[:4] == b"RIFF" and head[8:12] == b"WEBP",
        lambda head, tail, size: size >= int.from_bytes(head[4:8], "little") + 8,
    ),
    ImageFormat("BMP", b"BM", lambda head: True, lambda head, tail, size: size >= int.from_bytes(head[2:6], "little")),
)
FORMAT_NAMES = ", ".join(image_format.name for image_format in IMAGE_FORMATS[:-1]) + f" or {IMAGE_FORMATS[-1].name}"
FORMAT_BY_MAGIC = {image_format.magic: image_format for image_format in IMAGE_FORMATS}
"""The one format a file can be, from its first two bytes (one dict look-up instead of trying each format)."""


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


PNG_SIZE = struct.Struct(">LL")


def _header_size(name: str, head: bytes) -> tuple[int, int] | None:
    """(width, height) of a PNG, BMP or WebP from its first 64 bytes, parsed exactly as imagesize 2 does; None for JPEG.

    For these three formats imagesize reads only the same 64 bytes and applies no EXIF orientation, so doing it
    here saves its buffered open and second read (most of a cold scan). JPEG keeps imagesize, given the bytes
    already read or the open file: its size and EXIF orientation can sit anywhere in the file. Raises like
    imagesize on a malformed header.
    """
    if name == "PNG":
        if len(head) < 26 or head[12:16] != b"IHDR":
            raise ValueError("Invalid PNG file")
        return PNG_SIZE.unpack_from(head, 16)
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


WHOLE_READ_MAX = 64 * 1024
"""A file up to this size is read whole in one pread; a larger one as its first 64 and last 16 bytes."""
OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
"""O_NONBLOCK: opening a FIFO named like an image must not block the scan (it has size 0: an empty file)."""


def read_image_facts(path: str, pixel_limit: int | None) -> tuple[int, int, int, int, str]:
    """(size, mtime_ns, width, height, '') of an image file, or (size, mtime_ns, 0, 0, reason) when it cannot be used.

    One open, one fstat, one pread (the whole file, up to WHOLE_READ_MAX) or two (head and tail), one close: no
    separate stat of the path. A file that cannot be opened is stat'ed for its size and mtime; raises OSError when
    that fails too (a broken symlink, a file gone since the listing). pixel_limit: PIL.Image.MAX_IMAGE_PIXELS.
    """
    try:
        fd = os.open(path, OPEN_FLAGS)
    except OSError as error:
        info = os.stat(path)
        if info.st_size == 0:
            return 0, info.st_mtime_ns, 0, 0, "empty file (0 bytes)"
        if isinstance(error, PermissionError):
            return info.st_size, info.st_mtime_ns, 0, 0, "permission denied: cannot open for reading"
        return info.st_size, info.st_mtime_ns, 0, 0, f"cannot read: {error.strerror or error}"
    try:
        info = os.fstat(fd)
        size, mtime_ns = info.st_size, info.st_mtime_ns
        if size == 0:
            return 0, mtime_ns, 0, 0, "empty file (0 bytes)"
        whole = None
        try:
            if size <= WHOLE_READ_MAX:
                whole = os.pread(fd, size, 0)
                head, tail = whole[:64], whole[-16:]
            else:
                head, tail = os.pread(fd, 64, 0), os.pread(fd, 16, size - 16)
        except OSError as error:
            return size, mtime_ns, 0, 0, f"cannot read: {error.strerror or error}"
        image_format = FORMAT_BY_MAGIC.get(head[:2])
        if image_format is None or not image_format.matches(head):
            return size, mtime_ns, 0, 0, f"not an image: content is not {FORMAT_NAMES}"
        try:
            dimensions = _header_size(image_format.name, head)
            if dimensions is None:
                with io.BytesIO(whole) if whole is not None else open(fd, "rb", closefd=False) as file:
                    jpeg = imagesize.get_info(file, dpi=False, colors=False, channels=False)
                dimensions = jpeg.width, jpeg.height
        except Exception as error:  # imagesize raises several types on malformed headers
            return size, mtime_ns, 0, 0, f"corrupt {image_format.name} header: {error}"
    finally:
        os.close(fd)
    width, height = dimensions
    if width <= 0 or height <= 0:
        return size, mtime_ns, 0, 0, f"truncated or corrupt {image_format.name}: no size in the header"
    if pixel_limit and width * height > pixel_limit:
        return size, mtime_ns, 0, 0, (
            f"{width}x{height} = {width * height} pixels is over the "
            f"decompression-bomb limit of {pixel_limit} pixels (PIL.Image.MAX_IMAGE_PIXELS)"
        )
    if not image_format.complete(head, tail, size):
        error = _decode_error(path)
        if error:
            return size, mtime_ns, 0, 0, f"truncated or corrupt {image_format.name}: {error}"
    return size, mtime_ns, width, height, ""


class Listing(NamedTuple):
    """One directory's entries by role (hidden names, starting with '.', are left out)."""

    images: tuple[str, ...]
    """Image names, sorted."""
    captions: tuple[str, ...]
    """The caption file name of each image (`<stem>.txt`, any case), '' where it has none."""
    masks: dict[str, str]
    """Image stem -> its mask file name."""
    subdirs: tuple[str, ...]
    orphan_masks: tuple[str, ...]
    """Mask files with no image of the same stem, sorted."""


IMAGE_SUFFIXES = frozenset(extension[1:] for extension in IMAGE_EXTENSIONS)
CAPTION_SUFFIX = CAPTION_EXTENSION[1:]


def read_listing(path: str) -> Listing:
    """Split one directory's names into images, masks, captions and sub-folders.

    Two masks or captions for one stem (`a.txt`, `a.TXT`): the last name in sorted order counts.
    """
    images: list[str] = []
    masks: dict[str, str] = {}
    captions: dict[str, str] = {}
    subdirs: list[str] = []
    with os.scandir(path) as entries:
        for entry in entries:
            name = entry.name
            if name[0] == ".":
                continue
            stem, dot, extension = name.rpartition(".")
            extension = extension.lower()
            if not dot:
                if entry.is_dir():
                    subdirs.append(name)
            elif extension in IMAGE_SUFFIXES:
                if extension == "png" and stem.lower().endswith(MASK_STEM_SUFFIX):
                    image_stem = stem[: -len(MASK_STEM_SUFFIX)]
                    if name > masks.get(image_stem, ""):
                        masks[image_stem] = name
                else:
                    images.append(name)
            elif extension == CAPTION_SUFFIX:
                if name > captions.get(stem, ""):
                    captions[stem] = name
            elif entry.is_dir():
                subdirs.append(name)
    images.sort()
    subdirs.sort()
    stems = [name.rpartition(".")[0] for name in images]
    caption_of = captions.get
    image_stems = set(stems) if masks else set()
    return Listing(
        tuple(images),
        tuple([caption_of(stem, "") for stem in stems]),
        {stem: name for stem, name in masks.items() if stem in image_stems},
        tuple(subdirs),
        tuple(sorted(name for stem, name in masks.items() if stem not in image_stems)),
    )


RACY_WINDOW_NS = 2_000_000_000
"""A folder's listing or an image's facts are cached only once its mtime is this much older than the scan, since
a change within the same timestamp tick (up to 2 s on FAT) would leave the mtime unchanged."""
UNKNOWN = (-1, -1, 0, 0, "")
"""The facts of an image the cache does not know (or does not trust): it is read at the next scan."""
FACT_COLUMNS = 5
"""size, mtime_ns, width, height, reason: the facts of each image, stored one column per fact."""
ENTRY_FACTS = 1 + len(Listing._fields)
"""Where a cached directory entry's fact columns start: (mtime_ns, *Listing, sizes, mtimes, widths, heights, reasons)."""


def _columns(rows: list[tuple]) -> tuple[tuple, ...]:
    """Rows of image facts as FACT_COLUMNS columns."""
    return tuple(zip(*rows)) or ((),) * FACT_COLUMNS


class ScanCache:
    """What one concept folder's scan found, per directory, kept in the workspace cache dir.

    Relative directory ('' or 'sub/') -> (mtime_ns, *Listing, sizes, mtimes, widths, heights, reasons): the
    listing is valid while the directory's mtime is unchanged (adding, removing or renaming a file changes it),
    and each image's (width, height, reason) while its size and mtime are; the fact columns are aligned with
    listing.images, size -1 where unknown. Stored with marshal: a 10,000-image cache loads in milliseconds
    (several times faster than JSON), and it is private to this program, so a Python-version change only means
    one cold rescan.
    """

    _loaded: dict[str, tuple[tuple[int, int], dict]] = {}
    _memos: dict[tuple[str, bool], tuple[tuple, dict[str, tuple], ConceptScan]] = {}
    _lock = threading.Lock()

    def __init__(self, file: Path | None, root: str):
        self.file = file
        self.root = root
        self.old: dict[str, tuple] = self._load(file, root) if file is not None else {}
        self.new: dict[str, tuple] = {}
        """What this scan found: what is saved, and what a memo of its result checks."""
        self.error = ""
        self.now_ns = time.time_ns()
        self.racy = False
        """Whether something changed within RACY_WINDOW_NS of this scan, so its result is not memoised."""

    def recall(self, include_subdirs: bool, settings: tuple) -> ConceptScan | None:
        """The result of the last scan of this folder with these settings, if no folder or image it looked at changed."""
        if self.file is None:
            return None
        with self._lock:
            memo = self._memos.get((str(self.file), include_subdirs))
        if memo is None or memo[0] != settings:
            return None
        stat = os.stat
        for relative, entry in memo[1].items():
            directory = self.root + os.sep + relative
            try:
                if stat(directory).st_mtime_ns != entry[0]:
                    return None
            except OSError:
                return None
            for name, size, mtime_ns in zip(entry[1], entry[ENTRY_FACTS], entry[ENTRY_FACTS + 1]):
                try:
                    now = stat(directory + name)
                except OSError:
                    if size < 0:
                        continue
                    return None
                if now.st_size != size or now.st_mtime_ns != mtime_ns:
                    return None
        return memo[2]

    def remember(self, include_subdirs: bool, settings: tuple, result: ConceptScan) -> None:
        """Memoise a scan result in memory (only when nothing was racy and the cache file was written)."""
        if self.file is not None and not self.racy and not self.error:
            with self._lock:
                self._memos[(str(self.file), include_subdirs)] = (settings, self.new, result)

    @classmethod
    def for_folder(cls, cache_dir: Path | None, root: str) -> ScanCache:
        """The cache of folder `root` under `cache_dir` (None: an empty cache that is never written)."""
        if cache_dir is None:
            return cls(None, root)
        name = hashlib.sha256(root.encode("utf-8", "surrogateescape")).hexdigest()[:20]
        return cls(cache_dir / "scan" / f"{name}.marshal", root)

    @classmethod
    def _load(cls, file: Path, root: str) -> dict[str, tuple]:
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
            folders = document["dirs"]
        except (OSError, EOFError, ValueError, TypeError, KeyError):
            return {}
        with cls._lock:
            cls._loaded[key] = (stamp, folders)
        return folders

    def folder(self, relative: str, path: str, mtime_ns: int) -> tuple[Listing, tuple]:
        """A directory's listing and its images' facts as columns aligned with listing.images.

        From the cache when the directory's mtime matches; else listed again, keeping the cached facts of the
        images still there (a directory the cache does not know: endless UNKNOWN columns)."""
        cached = self.old.get(relative)
        if cached is not None and cached[0] == mtime_ns:
            return Listing(*cached[1:ENTRY_FACTS]), cached[ENTRY_FACTS:]
        listing = read_listing(path)
        if cached is None:
            return listing, tuple(repeat(value) for value in UNKNOWN)
        known = dict(zip(cached[1], zip(*cached[ENTRY_FACTS:])))
        return listing, _columns([known.get(name, UNKNOWN) for name in listing.images])

    def keep(self, relative: str, mtime_ns: int, listing: Listing, facts: tuple, changes: dict[str, tuple]) -> None:
        """Note a directory for saving: its listing, and the `facts` from folder() with `changes` (image name -> new
        facts) applied."""
        cached = self.old.get(relative)
        if changes or cached is None or cached[0] != mtime_ns:
            facts = _columns([changes.get(name, row) for name, row in zip(listing.images, zip(*facts))])
        settled = self.now_ns - mtime_ns >= RACY_WINDOW_NS
        self.racy |= not settled
        entry = (mtime_ns if settled else -1, *listing, *facts)
        self.new[relative] = cached if entry == cached else entry

    def save(self) -> None:
        """Write the cache (atomically) if this scan saw anything new, changed or gone; failures become self.error."""
        if self.file is None or self.new == self.old:
            return
        document = {"format": CACHE_FORMAT, "root": self.root, "dirs": self.new}
        try:
            atomic_write_bytes(self.file, marshal.dumps(document))
            stat = os.stat(self.file)
        except OSError as error:
            self.error = f"scan cache {str(self.file)!r} not written: {error.strerror or error}"
            return
        with self._lock:
            self._loaded[str(self.file)] = ((stat.st_size, stat.st_mtime_ns), self.new)


def _walk(root: str, recursive: bool, cache: ScanCache,
          unreadable: list[tuple[str, OSError]]) -> Iterator[tuple[str, str, int, Listing, tuple]]:
    """(directory, relative prefix, mtime_ns, listing, image facts) of `root` and, when recursive, of every sub-folder once.

    A folder that cannot be listed (not ours to read, or gone since its parent was listed) is added to `unreadable`
    as (its relative prefix, "" for the root; the error) and the walk goes on.
    """
    seen: set[tuple[int, int]] = set()
    pending = [(root, "")]
    while pending:
        path, prefix = pending.pop()
        try:
            stat = os.stat(path)
            if (stat.st_dev, stat.st_ino) in seen:
                continue
            seen.add((stat.st_dev, stat.st_ino))
            listing, facts = cache.folder(prefix, path, stat.st_mtime_ns)
        except OSError as error:
            unreadable.append((prefix, error))
            continue
        yield path, prefix, stat.st_mtime_ns, listing, facts
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


NOT_LOOKED_UP = -1
"""The pixel limit before a scan first needs it: looking it up imports PIL, which a warm scan never needs."""


def _scan_files(result: ConceptScan, concept: ConceptConfig, root: str, cache: ScanCache, label: str) -> None:
    """Fill `result` from the folder's files, through the cache; then save the cache."""
    uncaptioned: list[str] = []
    orphan_masks: list[str] = []
    with_caption_files = concept.caption_source is CaptionSource.TXT
    # The per-image work below is inlined: a warm scan is mostly this loop, and method calls, Path parsing and
    # repeated attribute look-ups were most of its time. An image the cache does not know is opened at once
    # (its size and mtime come from the open file); a known one is stat'ed and re-read only when it changed.
    # Cached facts that still match were settled when cached, so only re-read images can be racy.
    stat = os.stat
    settled_before = cache.now_ns - RACY_WINDOW_NS
    pixel_limit = NOT_LOOKED_UP
    images = result.images
    skipped = result.skipped
    new_image = tuple.__new__  # ScannedImage(...) without the NamedTuple's Python-level __new__
    unreadable: list[tuple[str, OSError]] = []
    for directory, prefix, directory_mtime_ns, listing, facts in _walk(root, concept.include_subdirs, cache, unreadable):
        folder = Path(directory)
        child = getattr(folder, "_make_child_relpath", folder.joinpath)  # 3.11's cheap child path (no re-parsing)
        directory += os.sep
        masks = listing.masks
        changes: dict[str, tuple] = {}
        captions = listing.captions if with_caption_files else repeat("")
        for name, caption_file, size, mtime_ns, width, height, reason in zip(listing.images, captions, *facts):
            path = directory + name
            try:
                if size >= 0:
                    info = stat(path)
                    if info.st_size != size or info.st_mtime_ns != mtime_ns:
                        size = -1
                if size < 0:
                    if pixel_limit == NOT_LOOKED_UP:
                        pixel_limit = _pixel_limit()
                    row = read_image_facts(path, pixel_limit)
                    size, mtime_ns, width, height, reason = row
                    if mtime_ns > settled_before:
                        row = UNKNOWN
                        cache.racy = True
                    changes[name] = row
            except OSError as error:
                changes[name] = UNKNOWN
                skipped.append(SkippedFile(path, _stat_error(path, error)))
                continue
            if reason:
                skipped.append(SkippedFile(path, reason))
                continue
            if with_caption_files and not caption_file:
                uncaptioned.append(prefix + name)
            mask = masks.get(name.rpartition(".")[0]) if masks else None
            images.append(new_image(ScannedImage, (child(name), width, height, caption_file, child(mask) if mask else None)))
        cache.keep(prefix, directory_mtime_ns, listing, facts, changes)
        orphan_masks += [prefix + name for name in listing.orphan_masks]

    cache.save()
    _add_warnings(result, label, uncaptioned, orphan_masks, cache.error)
    cache.racy |= bool(unreadable)  # not memoised: a folder that could not be listed left no mtime to check
    for prefix, error in unreadable:
        if not prefix:
            result.errors.append(f"{label}: folder {root!r} cannot be read: {error.strerror or error}")
            return
        result.warnings.append(f"{label}: sub-folder {prefix.rstrip(os.sep)!r} not scanned: {error.strerror or error}")
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
