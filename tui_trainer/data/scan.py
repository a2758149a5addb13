"""Concept scanning: find images, masks and captions; read sizes from headers; remember them in a scan cache.

Sizes come from image headers (imagesize, which also applies the EXIF orientation); pixels are decoded
only to confirm a file whose tail looks cut off. A bad file never stops a scan: it becomes a SkippedFile
with its path and the reason.
"""

from __future__ import annotations

import hashlib
import marshal
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import imagesize

from tui_trainer.atomic import atomic_write_bytes
from tui_trainer.config.enums import CaptionSource
from tui_trainer.config.schema import ConceptConfig

IMAGE_EXTENSIONS = frozenset({".bmp", ".jpeg", ".jpg", ".png", ".webp"})
"""Image file extensions a scan takes (compared lower-case)."""
MASK_SUFFIX = "-masklabel.png"
"""`<stem>-masklabel.png` beside an image is that image's mask, not an image."""
CAPTION_EXTENSION = ".txt"
CACHE_FORMAT = 1
"""Bump when the cached facts change meaning; older cache files are then ignored."""


@dataclass(frozen=True)
class SkippedFile:
    """A file that looked like an image but cannot be trained on."""

    path: str
    reason: str


@dataclass(frozen=True, slots=True)
class ScannedImage:
    """One usable image of a concept, before repeats."""

    path: str
    width: int
    """Displayed width (after the EXIF orientation)."""
    height: int
    captions: tuple[str, ...]
    """Its caption with prefix and suffix; several for caption_source = prompts_file (one is picked per copy)."""
    mask_path: str | None


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
    """(first 16 bytes, last 16 bytes, file size) -> whether the file looks whole."""


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


def read_image_facts(path: str, size: int) -> tuple[int, int, str]:
    """(width, height, '') of an image from its header, or (0, 0, reason) when it cannot be used."""
    if size == 0:
        return 0, 0, "empty file (0 bytes)"
    try:
        handle = open(path, "rb")
    except PermissionError:
        return 0, 0, "permission denied: cannot open for reading"
    except OSError as error:
        return 0, 0, f"cannot open: {error.strerror or error}"
    with handle:
        head = handle.read(16)
        image_format = next((candidate for candidate in IMAGE_FORMATS if candidate.matches(head)), None)
        if image_format is None:
            return 0, 0, f"not an image: content is not {FORMAT_NAMES}"
        handle.seek(0)
        try:
            info = imagesize.get_info(handle, dpi=False, colors=False, channels=False)
        except Exception as error:  # imagesize raises several types on malformed headers
            return 0, 0, f"corrupt {image_format.name} header: {error}"
        if info.width <= 0 or info.height <= 0:
            return 0, 0, f"truncated or corrupt {image_format.name}: no size in the header"
        handle.seek(max(0, size - 16))
        tail = handle.read(16)
    limit = _pixel_limit()
    if limit and info.width * info.height > limit:
        return 0, 0, (
            f"{info.width}x{info.height} = {info.width * info.height} pixels is over the "
            f"decompression-bomb limit of {limit} pixels (PIL.Image.MAX_IMAGE_PIXELS)"
        )
    if not image_format.complete(head, tail, size):
        error = _decode_error(path)
        if error:
            return 0, 0, f"truncated or corrupt {image_format.name}: {error}"
    return info.width, info.height, ""


class ScanCache:
    """Facts about one folder's files keyed by relative path + size + mtime, kept in the workspace cache dir.

    Stored with marshal: a 10,000-image cache loads in milliseconds (several times faster than JSON), and
    it is private to this program, so a Python-version change only means one cold rescan.
    """

    _loaded: dict[str, tuple[tuple[int, int], dict, dict]] = {}
    _lock = threading.Lock()

    def __init__(self, file: Path | None, root: str):
        self.file = file
        self.root = root
        self.old_files: dict[str, tuple] = {}
        self.old_texts: dict[str, tuple] = {}
        self.files: dict[str, tuple] = {}
        self.texts: dict[str, tuple] = {}
        self.error = ""
        if file is not None:
            self.old_files, self.old_texts = self._load(file, root)

    @classmethod
    def for_folder(cls, cache_dir: Path | None, root: str) -> ScanCache:
        """The cache of folder `root` under `cache_dir` (None: an empty cache that is never written)."""
        if cache_dir is None:
            return cls(None, root)
        name = hashlib.sha256(root.encode("utf-8", "surrogateescape")).hexdigest()[:20]
        return cls(cache_dir / "scan" / f"{name}.marshal", root)

    @classmethod
    def _load(cls, file: Path, root: str) -> tuple[dict, dict]:
        try:
            stat = os.stat(file)
        except OSError:
            return {}, {}
        key = str(file)
        stamp = (stat.st_size, stat.st_mtime_ns)
        with cls._lock:
            remembered = cls._loaded.get(key)
        if remembered is not None and remembered[0] == stamp:
            return remembered[1], remembered[2]
        try:
            document = marshal.loads(file.read_bytes())
            if document["format"] != CACHE_FORMAT or document["root"] != root:
                return {}, {}
            files, texts = document["files"], document["texts"]
        except (OSError, EOFError, ValueError, TypeError, KeyError):
            return {}, {}
        with cls._lock:
            cls._loaded[key] = (stamp, files, texts)
        return files, texts

    def image(self, relative: str, path: str, size: int, mtime_ns: int) -> tuple[int, int, str]:
        """(width, height, reason) of an image file: from the cache when size and mtime match, else read."""
        cached = self.old_files.get(relative)
        if cached is None or cached[0] != size or cached[1] != mtime_ns:
            cached = (size, mtime_ns, *read_image_facts(path, size))
        self.files[relative] = cached
        return cached[2], cached[3], cached[4]

    def text(self, relative: str, path: str, size: int, mtime_ns: int) -> tuple[str, bool]:
        """(text, was valid UTF-8) of a caption file: from the cache when size and mtime match, else read."""
        cached = self.old_texts.get(relative)
        if cached is None or cached[0] != size or cached[1] != mtime_ns:
            data = Path(path).read_bytes()
            try:
                cached = (size, mtime_ns, data.decode("utf-8"), True)
            except UnicodeDecodeError:
                cached = (size, mtime_ns, data.decode("utf-8", "replace"), False)
        self.texts[relative] = cached
        return cached[2], cached[3]

    def save(self) -> None:
        """Write the cache (atomically) if this scan saw anything new, changed or gone; failures become self.error."""
        if self.file is None or (self.files == self.old_files and self.texts == self.old_texts):
            return
        document = {"format": CACHE_FORMAT, "root": self.root, "files": self.files, "texts": self.texts}
        try:
            atomic_write_bytes(self.file, marshal.dumps(document))
            stat = os.stat(self.file)
        except OSError as error:
            self.error = f"scan cache {str(self.file)!r} not written: {error.strerror or error}"
            return
        with self._lock:
            self._loaded[str(self.file)] = ((stat.st_size, stat.st_mtime_ns), self.files, self.texts)


@dataclass
class _Folder:
    """The files of one directory, sorted by name, split into images, masks and captions by stem."""

    images: list[os.DirEntry] = field(default_factory=list)
    masks: dict[str, os.DirEntry] = field(default_factory=dict)
    captions: dict[str, os.DirEntry] = field(default_factory=dict)
    subdirs: list[str] = field(default_factory=list)


def _read_folder(path: str) -> _Folder:
    folder = _Folder()
    with os.scandir(path) as entries:
        for entry in sorted(entries, key=lambda item: item.name):
            name = entry.name
            if name.startswith("."):
                continue
            stem, extension = os.path.splitext(name)
            extension = extension.lower()
            if name.lower().endswith(MASK_SUFFIX):
                folder.masks[name[: -len(MASK_SUFFIX)]] = entry
            elif extension in IMAGE_EXTENSIONS:
                folder.images.append(entry)
            elif extension == CAPTION_EXTENSION:
                folder.captions[stem] = entry
            elif entry.is_dir():
                folder.subdirs.append(entry.path)
    return folder


def _walk(root: str, recursive: bool) -> Iterator[tuple[str, _Folder]]:
    """(relative dir prefix, folder) for `root` and, when recursive, every sub-folder once (symlink loops cut)."""
    seen: set[tuple[int, int]] = set()
    pending = [root]
    while pending:
        path = pending.pop()
        stat = os.stat(path)
        if (stat.st_dev, stat.st_ino) in seen:
            continue
        seen.add((stat.st_dev, stat.st_ino))
        folder = _read_folder(path)
        prefix = "" if path == root else os.path.relpath(path, root) + os.sep
        yield prefix, folder
        if recursive:
            pending.extend(reversed(folder.subdirs))


def _stat_error(entry: os.DirEntry, error: OSError) -> str:
    if entry.is_symlink() and isinstance(error, FileNotFoundError):
        return f"broken symlink: target {os.readlink(entry.path)!r} does not exist"
    return f"cannot read file information: {error.strerror or error}"


def _caption(concept: ConceptConfig, text: str) -> str:
    """prefix + text (whitespace runs collapsed to one space) + suffix, without outer whitespace."""
    return f"{concept.caption_prefix}{' '.join(text.split())}{concept.caption_suffix}".strip()


def _prompts(concept: ConceptConfig, path: Path | None) -> tuple[tuple[str, ...], str]:
    """(captions from the prompts file with prefix/suffix, error text or '')."""
    if path is None:
        return (), "caption_source = 'prompts_file' needs prompts_file"
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as error:
        return (), f"prompts_file {str(path)!r} cannot be read: {error.strerror or error}"
    captions = tuple(
        _caption(concept, line) for line in lines if line.strip()
    )
    return captions, "" if captions else f"prompts_file {str(path)!r} has no captions (one per line)"


def scan_concept(
    concept: ConceptConfig, folder: Path, cache: ScanCache, prompts_file: Path | None = None, index: int = 0
) -> ConceptScan:
    """Scan one concept folder: usable images with sizes, masks and captions; bad files with reasons.

    A missing folder, a missing or empty prompts file, or a folder without any usable image is an error
    naming the concept.
    """
    result = ConceptScan()
    label = f"concept {concept.name!r} (concepts[{index}])"
    root = str(folder)
    if not folder.is_dir():
        result.errors.append(f"{label}: folder {root!r} does not exist")
        return result
    prompts: tuple[str, ...] = ()
    if concept.caption_source is CaptionSource.PROMPTS_FILE:
        prompts, error = _prompts(concept, prompts_file)
        if error:
            result.errors.append(f"{label}: {error}")
            return result

    uncaptioned: list[str] = []
    not_utf8: list[str] = []
    orphan_masks: list[str] = []
    for prefix, listing in _walk(root, concept.include_subdirs):
        image_stems = set()
        for entry in listing.images:
            stem = os.path.splitext(entry.name)[0]
            image_stems.add(stem)
            relative = prefix + entry.name
            try:
                stat = entry.stat()
            except OSError as error:
                result.skipped.append(SkippedFile(entry.path, _stat_error(entry, error)))
                continue
            width, height, reason = cache.image(relative, entry.path, stat.st_size, stat.st_mtime_ns)
            if reason:
                result.skipped.append(SkippedFile(entry.path, reason))
                continue
            if prompts:
                captions = prompts
            else:
                text = _caption_text(concept, stem, prefix, listing, cache, relative, uncaptioned, not_utf8)
                captions = (_caption(concept, text),)
            mask = listing.masks.get(stem)
            result.images.append(ScannedImage(entry.path, width, height, captions, mask.path if mask else None))
        orphan_masks += [prefix + entry.name for stem, entry in listing.masks.items() if stem not in image_stems]

    cache.save()
    _add_warnings(result, label, uncaptioned, not_utf8, orphan_masks, cache.error)
    if not result.images:
        extensions = ", ".join(sorted(IMAGE_EXTENSIONS))
        bad = f" ({len(result.skipped)} bad files skipped)" if result.skipped else ""
        result.errors.append(f"{label}: folder {root!r} has no usable images{bad}; allowed extensions: {extensions}")
    return result


def _caption_text(
    concept: ConceptConfig, stem: str, prefix: str, listing: _Folder, cache: ScanCache,
    relative: str, uncaptioned: list[str], not_utf8: list[str],
) -> str:
    if concept.caption_source is CaptionSource.FILENAME:
        return stem
    entry = listing.captions.get(stem)
    if entry is None:
        uncaptioned.append(relative)
        return ""
    try:
        stat = entry.stat()
        text, valid = cache.text(prefix + entry.name, entry.path, stat.st_size, stat.st_mtime_ns)
    except OSError:
        uncaptioned.append(relative)
        return ""
    if not valid:
        not_utf8.append(prefix + entry.name)
    return text


def _examples(names: list[str]) -> str:
    shown = ", ".join(repr(name) for name in names[:3])
    return shown + (", ..." if len(names) > 3 else "")


def _add_warnings(
    result: ConceptScan, label: str, uncaptioned: list[str], not_utf8: list[str], orphan_masks: list[str], cache_error: str
) -> None:
    if uncaptioned:
        result.warnings.append(
            f"{label}: {len(uncaptioned)} images have no {CAPTION_EXTENSION} caption ({_examples(uncaptioned)}); "
            "they train with only the caption prefix/suffix"
        )
    if not_utf8:
        result.warnings.append(f"{label}: {len(not_utf8)} caption files are not UTF-8 ({_examples(not_utf8)}); bad bytes were replaced")
    if orphan_masks:
        result.warnings.append(f"{label}: {len(orphan_masks)} mask files have no image ({_examples(orphan_masks)})")
    if cache_error:
        result.warnings.append(f"{label}: {cache_error}")
