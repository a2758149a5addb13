"""Concept scanning: which files count, caption files, masks, bad files and the scan cache."""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from PIL import Image

from tui_trainer.config.schema import ConceptConfig
from tui_trainer.data import ImageItem, read_captions
from tui_trainer.data import scan as scan_module
from tui_trainer.data.scan import ScanCache, scan_concept
from tui_trainer.devkit.datasets import BROKEN_KINDS, make_dataset

NOBODY = 65534


def scan(folder: Path, cache_dir: Path | None = None, **concept):
    config = ConceptConfig(name="c", path=str(folder), **concept)
    return scan_concept(config, folder, ScanCache.for_folder(cache_dir, str(folder)))


def captions_of(result, **concept) -> list[tuple[str, ...]]:
    """Each scanned image's captions, read as the trainer reads them (read_captions)."""
    items = [ImageItem(image.path, image.width, image.height, 0, image.mask_path, (64, 64), image.caption_file) for image in result.images]
    captions = read_captions(items, [ConceptConfig(name="c", path=".", **concept)])
    return [captions.of(item) for item in items]


def save(path: Path, size: tuple[int, int] = (64, 64), image_format: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (200, 10, 10)).save(path, format=image_format)
    return path


def age(folder: Path, seconds: float = 60) -> None:
    """Make a dataset look settled: files and folders last changed `seconds` ago (see RACY_WINDOW_NS)."""
    when = time.time() - seconds
    for path in [folder, *folder.rglob("*")]:
        os.utime(path, (when, when), follow_symlinks=False)


def test_extensions_are_case_insensitive_and_other_files_ignored(tmp_path: Path):
    save(tmp_path / "a.JPG", image_format="JPEG")
    save(tmp_path / "b.Png", image_format="PNG")
    save(tmp_path / "c.webp", (96, 64))
    save(tmp_path / "d.bmp", (64, 96))
    save(tmp_path / "e.jpeg", image_format="JPEG")
    save(tmp_path / "f.gif", image_format="GIF")
    (tmp_path / "notes.md").write_text("not an image")
    result = scan(tmp_path, caption_source="filename")
    captions = captions_of(result, caption_source="filename")
    found = [(image.path.name, image.width, image.height, caption) for image, caption in zip(result.images, captions, strict=True)]
    assert found == [
        ("a.JPG", 64, 64, ("a",)), ("b.Png", 64, 64, ("b",)), ("c.webp", 96, 64, ("c",)),
        ("d.bmp", 64, 96, ("d",)), ("e.jpeg", 64, 64, ("e",)),
    ]
    assert result.skipped == [] and result.errors == [] and result.warnings == []


def test_subfolders_only_when_include_subdirs(tmp_path: Path):
    save(tmp_path / "top.png")
    save(tmp_path / "sub" / "deep" / "low.png")
    save(tmp_path / ".hidden" / "secret.png")
    flat = scan(tmp_path, caption_source="filename")
    deep = scan(tmp_path, caption_source="filename", include_subdirs=True)
    assert [image.path.name for image in flat.images] == ["top.png"]
    assert sorted(image.path.name for image in deep.images) == ["low.png", "top.png"]


def test_a_sub_folder_gone_since_its_parent_was_listed_is_a_warning(tmp_path: Path, monkeypatch):
    folder = tmp_path / "ds"
    for name in ("top.png", "gone/a.png", "kept/b.png"):
        save(folder / name)
    read_listing = scan_module.read_listing

    def listing_then_remove(path: str):
        found = read_listing(path)
        if path == str(folder):
            shutil.rmtree(folder / "gone")
        return found

    monkeypatch.setattr(scan_module, "read_listing", listing_then_remove)
    result = scan(folder, tmp_path / "cache", caption_source="filename", include_subdirs=True)
    assert sorted(image.path.name for image in result.images) == ["b.png", "top.png"]
    assert (result.errors, result.warnings) == (
        [], ["concept 'c' (concepts[0]): sub-folder 'gone' not scanned: No such file or directory"])


def test_an_unreadable_sub_folder_is_a_warning_until_it_can_be_read(tmp_path: Path, monkeypatch):
    """The rest is scanned; once the folder can be read the next scan (same cache, nothing else changed) finds it."""
    folder = tmp_path / "ds"
    for name in ("top.png", "locked/a.png"):
        save(folder / name)
    age(folder)
    read_listing = scan_module.read_listing

    def listing(path: str):
        if path == str(folder / "locked"):
            raise PermissionError(13, "Permission denied", path)
        return read_listing(path)

    monkeypatch.setattr(scan_module, "read_listing", listing)
    locked = scan(folder, tmp_path / "cache", caption_source="filename", include_subdirs=True)
    assert [image.path.name for image in locked.images] == ["top.png"]
    assert (locked.errors, locked.warnings) == (
        [], ["concept 'c' (concepts[0]): sub-folder 'locked' not scanned: Permission denied"])
    monkeypatch.setattr(scan_module, "read_listing", read_listing)
    readable = scan(folder, tmp_path / "cache", caption_source="filename", include_subdirs=True)
    assert sorted(image.path.name for image in readable.images) == ["a.png", "top.png"]
    assert readable.warnings == []


def test_a_concept_folder_that_cannot_be_read_is_an_error_naming_it(tmp_path: Path, monkeypatch):
    save(tmp_path / "ds" / "top.png")

    def listing(path: str):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(scan_module, "read_listing", listing)
    result = scan(tmp_path / "ds", caption_source="filename")
    assert result.images == []
    assert result.errors == [f"concept 'c' (concepts[0]): folder {str(tmp_path / 'ds')!r} cannot be read: Permission denied"]


def test_masks_are_recorded_not_counted_and_caption_files_found(tmp_path: Path):
    make_dataset(tmp_path, [(64, 64, 2)], masks=True)
    (tmp_path / "img_0000_64x64.txt").write_text("  red,\n  dog  \n")
    save(tmp_path / "stray-masklabel.png")
    result = scan(tmp_path, caption_prefix="sks, ", caption_suffix=" !")
    assert [image.path.name for image in result.images] == ["img_0000_64x64.png", "img_0001_64x64.png"]
    assert result.images[0].mask_path == tmp_path / "img_0000_64x64-masklabel.png"
    assert [image.caption_file for image in result.images] == ["img_0000_64x64.txt", "img_0001_64x64.txt"]
    assert captions_of(result, caption_prefix="sks, ", caption_suffix=" !")[0] == ("sks, red, dog !",)
    assert result.warnings == ["concept 'c' (concepts[0]): 1 mask files have no image ('stray-masklabel.png')"]


def test_missing_caption_files_are_one_warning(tmp_path: Path):
    make_dataset(tmp_path, [(64, 64, 4)], captions=False)
    result = scan(tmp_path, caption_prefix="sks")
    assert captions_of(result, caption_prefix="sks") == [("sks",)] * 4
    assert result.warnings == [
        "concept 'c' (concepts[0]): 4 images have no .txt caption ('img_0000_64x64.png', 'img_0001_64x64.png', "
        "'img_0002_64x64.png', ...); they train with only the caption prefix/suffix"
    ]


EXPECTED_REASONS = {
    "zero_byte": "empty file (0 bytes)",
    "truncated": "truncated or corrupt PNG: ",
    "not_an_image": "not an image: content is not PNG, JPEG, WebP or BMP",
    "decompression_bomb": "20000x20000 = 400000000 pixels is over the decompression-bomb limit of",
    "unreadable": "permission denied: cannot open for reading",
    "broken_symlink": "broken symlink: target ",
}


@pytest.fixture(scope="module")
def bad_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four good images beside one file of every bad kind, in a folder any user may read."""
    folder = Path(tempfile.mkdtemp(prefix="tt-bad-"))
    make_dataset(folder, [(64, 64, 3), (96, 64, 1)], broken=BROKEN_KINDS)
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


def skipped_by_kind(skipped) -> dict[str, str]:
    return {Path(item.path).stem.removeprefix("broken_"): item.reason for item in skipped}


def test_bad_files_are_listed_with_reasons_and_good_ones_counted(bad_dataset: Path):
    result = scan(bad_dataset)
    reasons = skipped_by_kind(result.skipped)
    readable_by_me = os.access(bad_dataset / "broken_unreadable.png", os.R_OK)
    expected_kinds = set(BROKEN_KINDS) - ({"unreadable"} if readable_by_me else set())
    assert set(reasons) == expected_kinds, "as root, mode 000 is still readable, so that file is a good image"
    for kind in expected_kinds:
        assert reasons[kind].startswith(EXPECTED_REASONS[kind]), (kind, reasons[kind])
    assert len(result.images) == 4 + readable_by_me
    assert result.errors == []


@pytest.mark.skipif(not hasattr(os, "fork") or os.geteuid() != 0, reason="needs root to become another user")
def test_unreadable_file_as_an_ordinary_user(bad_dataset: Path):
    """Root reads mode-000 files, so scan in a forked child that has become user nobody."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            result = scan(bad_dataset)
            payload = {"skipped": skipped_by_kind(result.skipped), "images": len(result.images)}
            os.write(write_end, json.dumps(payload).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        payload = json.loads(pipe.read() or b"{}")
    os.waitpid(pid, 0)
    assert payload["skipped"]["unreadable"] == EXPECTED_REASONS["unreadable"]
    assert set(payload["skipped"]) == set(BROKEN_KINDS) and payload["images"] == 4


def test_truncated_jpeg_and_a_jpeg_with_trailing_data(tmp_path: Path):
    whole = save(tmp_path / "whole.jpg", (64, 64), "JPEG").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "trailer.jpg").write_bytes(whole + b"MOTION-PHOTO-TRAILER" * 10)
    result = scan(tmp_path, caption_source="filename")
    assert sorted(image.path.name for image in result.images) == ["trailer.jpg", "whole.jpg"]
    assert [Path(item.path).name for item in result.skipped] == ["cut.jpg"]
    assert result.skipped[0].reason.startswith("truncated or corrupt JPEG: ")


def test_cache_skips_unchanged_files_and_rereads_changed_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    folder = make_dataset(tmp_path / "ds", [(64, 64, 3)], broken=["zero_byte"])
    age(folder)
    cache_dir = tmp_path / "cache"
    reads: list[str] = []
    real = scan_module.read_image_facts
    monkeypatch.setattr(scan_module, "read_image_facts", lambda path, limit: reads.append(Path(path).name) or real(path, limit))
    first = scan(folder, cache_dir)
    assert len(reads) == 4 and len(list((cache_dir / "scan").glob("*.marshal"))) == 1
    reads.clear()
    assert scan(folder, cache_dir) is first, "an unchanged folder gives the remembered result"
    ScanCache._loaded.clear()
    ScanCache._memos.clear()
    second = scan(folder, cache_dir)
    assert reads == [] and second.images == first.images and second.skipped == first.skipped, "read back from disk"
    save(folder / "img_0001_64x64.png", (96, 64))
    (folder / "img_0002_64x64.txt").write_text("new caption")
    third = scan(folder, cache_dir)
    assert reads == ["img_0001_64x64.png"]
    assert (third.images[1].width, third.images[1].height) == (96, 64)
    assert captions_of(third)[2] == ("new caption",)
    save(folder / "img_0009_64x64.png")
    assert [image.path.name for image in scan(folder, cache_dir).images][-1] == "img_0009_64x64.png"


def test_recent_changes_are_not_trusted_to_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A file changed within RACY_WINDOW_NS could change again within the same mtime tick: re-read it."""
    folder = make_dataset(tmp_path / "ds", [(64, 64, 2)])
    reads: list[str] = []
    real = scan_module.read_image_facts
    monkeypatch.setattr(scan_module, "read_image_facts", lambda path, limit: reads.append(Path(path).name) or real(path, limit))
    scan(folder, tmp_path / "cache")
    scan(folder, tmp_path / "cache")
    assert len(reads) == 4
    age(folder)
    scan(folder, tmp_path / "cache")
    scan(folder, tmp_path / "cache")
    assert len(reads) == 6


def test_no_cache_dir_writes_nothing(tmp_path: Path):
    folder = make_dataset(tmp_path / "ds", [(64, 64, 1)])
    scan(folder, None)
    assert sorted(path.name for path in tmp_path.rglob("*")) == ["ds", "img_0000_64x64.png", "img_0000_64x64.txt"]


def test_corrupt_cache_file_is_ignored(tmp_path: Path):
    folder = make_dataset(tmp_path / "ds", [(64, 64, 2)])
    age(folder)
    cache_dir = tmp_path / "cache"
    expected = scan(folder, cache_dir).images
    cache_file = next((cache_dir / "scan").glob("*.marshal"))
    cache_file.write_bytes(b"\x00garbage")
    ScanCache._loaded.clear()
    ScanCache._memos.clear()
    assert scan(folder, cache_dir).images == expected


def test_header_sizes_match_imagesize(tmp_path: Path):
    """PNG, BMP and WebP sizes are parsed from the first bytes by hand; they must agree with imagesize."""
    import imagesize

    files = [
        save(tmp_path / "rgb.png", (37, 21)), save(tmp_path / "la.png", (5, 300)),
        save(tmp_path / "plain.bmp", (33, 17)), save(tmp_path / "lossy.webp", (61, 45)),
    ]
    Image.new("RGBA", (70, 9)).save(tmp_path / "lossless.webp", lossless=True)
    Image.new("RGBA", (19, 81), (1, 2, 3, 128)).save(tmp_path / "alpha.webp", quality=80)
    files += [tmp_path / "lossless.webp", tmp_path / "alpha.webp"]
    for path in files:
        assert scan_module.read_image_facts(str(path), Image.MAX_IMAGE_PIXELS)[2:] == (*imagesize.get(str(path)), ""), path.name
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 30)
    (tmp_path / "short.webp").write_bytes(b"RIFF\x04\x00\x00\x00WEBP")
    (tmp_path / "odd.webp").write_bytes(b"RIFF\x20\x00\x00\x00WEBPVP9 " + b"\x00" * 24)
    reasons = {name: scan_module.read_image_facts(str(tmp_path / name), Image.MAX_IMAGE_PIXELS)[4]
               for name in ("bad.png", "short.webp", "odd.webp")}
    assert reasons == {
        "bad.png": "corrupt PNG header: Invalid PNG file",
        "short.webp": "truncated or corrupt WebP: no size in the header",
        "odd.webp": "corrupt WebP header: Unsupported WebP file",
    }


def test_jpeg_exif_orientation_swaps_the_size(tmp_path: Path):
    image = Image.new("RGB", (40, 24))
    exif = image.getexif()
    exif[0x0112] = 6  # rotated 90 degrees: displayed 24 x 40
    image.save(tmp_path / "turned.jpg", exif=exif)
    result = scan(tmp_path, caption_source="filename")
    assert [(image.width, image.height) for image in result.images] == [(24, 40)]


def noise(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """An image that does not compress: saved, it is larger than WHOLE_READ_MAX."""
    return Image.frombytes("RGB", size, random.Random(seed).randbytes(size[0] * size[1] * 3))


def test_small_and_large_files_agree_with_imagesize_and_cut_off_ones_are_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Up to WHOLE_READ_MAX a file is read whole, above as head and tail; JPEG sizes (EXIF orientation applied)
    come from imagesize on the bytes read or the open file. Either way: imagesize's sizes, the same bad-file reasons,
    and only files whose tail looks cut off are decoded."""
    import imagesize

    decoded: list[str] = []
    real_decode = scan_module._decode_error
    monkeypatch.setattr(scan_module, "_decode_error", lambda path: decoded.append(Path(path).name) or real_decode(path))

    files = []
    for side, label in ((24, "small"), (260, "large")):
        for image_format, extension in (("PNG", "png"), ("JPEG", "jpg"), ("WEBP", "webp"), ("BMP", "bmp")):
            files.append(tmp_path / f"{label}.{extension}")
            noise((side, side - 7)).save(files[-1], format=image_format, quality=100)
        for orientation in range(1, 9):
            picture = noise((side + 9, side))
            exif = picture.getexif()
            exif[0x0112] = orientation
            files.append(tmp_path / f"{label}-turned-{orientation}.jpg")
            picture.save(files[-1], exif=exif, quality=100, progressive=orientation % 2 == 0)
    sizes = {path.name: path.stat().st_size for path in files}
    assert max(size for name, size in sizes.items() if name.startswith("small")) <= scan_module.WHOLE_READ_MAX
    assert min(size for name, size in sizes.items() if name.startswith("large")) > scan_module.WHOLE_READ_MAX
    for path in files:
        size, mtime_ns, width, height, reason = scan_module.read_image_facts(str(path), Image.MAX_IMAGE_PIXELS)
        assert (size, mtime_ns) == (path.stat().st_size, path.stat().st_mtime_ns)
        assert (width, height, reason) == (*imagesize.get(str(path)), ""), path.name
    assert decoded == []
    assert scan_module.read_image_facts(str(tmp_path / "large-turned-6.jpg"), None)[2:4] == (260, 269)
    names = {"PNG": "png", "JPEG": "jpg", "WebP": "webp", "BMP": "bmp"}
    for format_name, extension in names.items():
        whole = (tmp_path / f"large.{extension}").read_bytes()
        (tmp_path / f"cut.{extension}").write_bytes(whole[: len(whole) * 2 // 3])
        reason = scan_module.read_image_facts(str(tmp_path / f"cut.{extension}"), None)[4]
        assert reason.startswith(f"truncated or corrupt {format_name}: "), reason
    assert decoded == [f"cut.{extension}" for extension in names.values()]
    (tmp_path / "trailer.jpg").write_bytes((tmp_path / "large.jpg").read_bytes() + b"MOTION-PHOTO-TRAILER" * 10)
    assert scan_module.read_image_facts(str(tmp_path / "trailer.jpg"), None)[2:] == (260, 253, "")


def test_cold_scan_opens_each_image_once_and_warm_scans_only_stat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Cold: open, fstat, one pread (two above WHOLE_READ_MAX), close; no stat of an image, no caption file touched.
    Warm from the cache file, and remembered: one stat per image."""
    folder = make_dataset(tmp_path / "ds", [(64, 64, 3)])
    noise((200, 200)).save(folder / "large.png")
    age(folder)
    images = {str(path) for path in folder.glob("*.png")}
    calls: list[tuple[str, str]] = []
    for name in ("stat", "open", "fstat", "pread"):
        def record(*args, _real=getattr(os, name), _name=name, **kwargs):
            calls.append((_name, str(args[0])))
            return _real(*args, **kwargs)
        monkeypatch.setattr(os, name, record)

    def image_calls() -> list[tuple[str, str]]:
        """The calls on images and captions since the last call (fstat and pread name a file descriptor)."""
        seen = sorted((name, "fd" if name in ("fstat", "pread") else target) for name, target in calls
                      if name in ("fstat", "pread") or target in images or target.endswith(".txt"))
        calls.clear()
        return seen

    ScanCache._memos.clear()
    ScanCache._loaded.clear()
    scan(folder, tmp_path / "cache")
    assert image_calls() == [("fstat", "fd")] * 4 + sorted(("open", path) for path in images) + [("pread", "fd")] * 5
    ScanCache._memos.clear()
    ScanCache._loaded.clear()
    scan(folder, tmp_path / "cache")
    assert image_calls() == sorted(("stat", path) for path in images)
    scan(folder, tmp_path / "cache")
    assert image_calls() == sorted(("stat", path) for path in images)


def test_a_changed_folder_listing_keeps_the_facts_of_the_images_still_there(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    folder = make_dataset(tmp_path / "ds", [(64, 64, 3)])
    make_dataset(folder / "sub", [(96, 64, 2)], seed=1)
    age(folder)
    reads: list[str] = []
    real = scan_module.read_image_facts
    monkeypatch.setattr(scan_module, "read_image_facts", lambda path, limit: reads.append(Path(path).name) or real(path, limit))
    cache_dir = tmp_path / "cache"
    assert len(scan(folder, cache_dir, include_subdirs=True).images) == 5 and len(reads) == 5
    reads.clear()
    save(folder / "sub" / "added.png", (64, 96))
    (folder / "img_0000_64x64.txt").unlink()
    (folder / "img_0002_64x64.png").unlink()
    when = time.time() - 60
    for changed in (folder, folder / "sub", folder / "sub" / "added.png"):
        os.utime(changed, (when, when))
    ScanCache._memos.clear()
    ScanCache._loaded.clear()
    result = scan(folder, cache_dir, include_subdirs=True)
    assert reads == ["added.png"]
    assert sorted((image.path.name, image.width, image.height, image.caption_file) for image in result.images) == [
        ("added.png", 64, 96, ""), ("img_0000_64x64.png", 64, 64, ""), ("img_0000_96x64.png", 96, 64, "img_0000_96x64.txt"),
        ("img_0001_64x64.png", 64, 64, "img_0001_64x64.txt"), ("img_0001_96x64.png", 96, 64, "img_0001_96x64.txt"),
    ]
    assert scan(folder, cache_dir, include_subdirs=True) is result and reads == ["added.png"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_fifo_named_like_an_image_is_skipped_without_blocking(tmp_path: Path):
    save(tmp_path / "good.png")
    os.mkfifo(tmp_path / "pipe.png")
    result = scan(tmp_path, caption_source="filename")
    assert [image.path.name for image in result.images] == ["good.png"]
    assert [(Path(item.path).name, item.reason) for item in result.skipped] == [("pipe.png", "empty file (0 bytes)")]
