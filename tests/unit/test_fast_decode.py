"""The fast decode path (data/fastdecode.py): plain 8-bit JPEG and PNG files go through torchvision's decoders and give
Pillow's pixels; everything Pillow handles specially (rotation, draft mode, alpha, palettes, 16-bit, CMYK, bombs,
damaged files) still goes to Pillow; bytes in memory (an upload) decode exactly as the same file does; and the scandir
listing keeps the order and counts of sorted(rglob)."""
from __future__ import annotations

import os
import random
import struct
import subprocess
import sys
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dlkit.data import fastdecode, folders
from dlkit.data.fastdecode import HEAD_BYTES, decoder_for
from dlkit.data.images import ImageError, load_image, load_image_bytes
from dlkit.data.loaders import decode_files
from dlkit.data.source import Samples
from dlkit.data.transforms import convert_channels


def photo(h: int, w: int, mode: str, seed: int = 0) -> np.ndarray:
    """Smooth shapes with a little grain: JPEG-friendly like a real photo (pure noise is not)."""
    rng = np.random.default_rng(seed)
    bands = 3 if mode == "RGB" else 1
    coarse = rng.integers(0, 256, (h // 6 + 2, w // 6 + 2, bands), dtype=np.uint8).squeeze()
    smooth = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), dtype=np.int16)
    return np.clip(smooth + rng.normal(0, 5, smooth.shape), 0, 255).astype(np.uint8)


def save(path: Path, pixels: np.ndarray, mode: str, **kw) -> Path:
    Image.fromarray(pixels, mode).save(path, **kw)
    return path


def header(path: Path) -> bytes:
    return path.read_bytes()[:HEAD_BYTES]


def decode(path: Path, channels: int, size: int | None, fast: bool) -> torch.Tensor:
    old, fastdecode.ENABLED = fastdecode.ENABLED, fast
    try:
        return load_image(path, channels, size)
    finally:
        fastdecode.ENABLED = old


@pytest.fixture
def pillow_limit(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)


# ----------------------------------------------------------------------------------------------------------------
# 1. the fast path is there and taken, and gives Pillow's pixels

def test_torchvision_image_ops_load_without_importing_torchvision(tmp_path):
    """A silent fallback would keep every test green while the fast path is never taken: fail loudly instead."""
    jpeg = save(tmp_path / "a.jpg", photo(32, 32, "RGB"), "RGB")
    code = ("import sys; from dlkit.data import fastdecode; from dlkit.data.images import load_image; "
            f"assert fastdecode.image_ops() is not None; assert fastdecode.decode({str(jpeg)!r}, 3) is not None; "
            f"load_image({str(jpeg)!r}, 3, 32); print(sorted(m for m in sys.modules if m.startswith('torchvision')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"  # the image library alone: `import torchvision` costs over a second


# JPEG decoders may differ by IDCT rounding: with the same libjpeg-turbo settings on both sides we measured 0 here
JPEG_MAX_DIFF, JPEG_MEAN_DIFF = 2, 0.05


@pytest.mark.parametrize("kind", ["jpeg", "progressive", "png"])
@pytest.mark.parametrize("mode", ["L", "RGB"])
@pytest.mark.parametrize("side", [32, 48, 150])
def test_plain_files_take_the_fast_path_and_give_pillows_pixels(tmp_path, kind, mode, side):
    options = {"jpeg": {"quality": 75}, "progressive": {"quality": 90, "progressive": True}, "png": {}}[kind]
    path = save(tmp_path / f"a.{'png' if kind == 'png' else 'jpg'}", photo(side, side + 7, mode), mode, **options)
    # resized to 32 only where Pillow would not draft-decode (sides under 64): draft changes the pixels on purpose
    for size in (None, 32) if side < 64 else (None,):
        assert decoder_for(header(path), size) == "torchvision"
        for channels in (1, 3):
            assert fastdecode.decode(path, channels, size) is not None
            fast, pil = decode(path, channels, size, True), decode(path, channels, size, False)
            assert fast.shape == pil.shape == (channels, *((size, size) if size else (side, side + 7)))
            assert fast.dtype == torch.uint8
            diff = (fast.int() - pil.int()).abs()
            if kind == "png":
                assert torch.equal(fast, pil)
            else:
                assert diff.max() <= JPEG_MAX_DIFF and diff.float().mean() <= JPEG_MEAN_DIFF


def test_a_plain_jpeg_never_reaches_pillow(tmp_path, monkeypatch):
    from dlkit.data import images

    path = save(tmp_path / "a.jpg", photo(32, 32, "RGB"), "RGB")
    monkeypatch.setattr(images, "open_image", lambda *a, **k: pytest.fail("Pillow was asked to decode a plain JPEG"))
    assert load_image(path, 3, 32).shape == (3, 32, 32)


def test_dlkit_fast_decode_off_sends_everything_to_pillow(tmp_path, monkeypatch):
    from dlkit.data import images

    path = save(tmp_path / "a.jpg", photo(32, 32, "RGB"), "RGB")
    opened = []
    real = images.open_image
    monkeypatch.setattr(images, "open_image", lambda *a, **k: opened.append(a) or real(*a, **k))
    monkeypatch.setattr(fastdecode, "ENABLED", False)
    load_image(path, 3, 32)
    assert len(opened) == 1


def test_rgb_to_gray_is_pillows_conversion_exactly(tmp_path):
    rng = np.random.default_rng(1)
    noise = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)  # every rounding case Pillow's integer luma meets
    path = save(tmp_path / "noise.png", noise, "RGB")
    fast, pil = decode(path, 1, None, True), decode(path, 1, None, False)
    assert torch.equal(fast, pil)
    # the in-memory conversion (float weights, rounded) agrees to within one level
    rgb = torch.from_numpy(noise).permute(2, 0, 1).unsqueeze(0)
    assert (convert_channels(rgb, 1)[0].int() - fast.int()).abs().max() <= 1


# ----------------------------------------------------------------------------------------------------------------
# 2. what Pillow handles specially stays with Pillow

def exif_with_orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


def with_xmp_orientation(jpeg: bytes, value: int) -> bytes:
    """An APP1 XMP segment (no EXIF) saying tiff:Orientation: Pillow rotates by it."""
    xmp = (b"http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF><rdf:Description "
           b"xmlns:tiff='http://ns.adobe.com/tiff/1.0/' tiff:Orientation=\"%d\"/></rdf:RDF></x:xmpmeta>" % value)
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(xmp) + 2) + xmp + jpeg[2:]


def half_black_half_white(h: int, w: int) -> np.ndarray:
    pixels = np.zeros((h, w, 3), np.uint8)
    pixels[:, w // 2:] = 255
    return pixels


def test_exif_rotated_jpeg_goes_to_pillow_and_comes_out_upright(tmp_path):
    path = save(tmp_path / "rotated.jpg", half_black_half_white(8, 16), "RGB", exif=exif_with_orientation(6),
                quality=95)
    assert decoder_for(header(path)) == "pil"
    out = decode(path, 1, None, True)[0].int()
    assert out.shape == (16, 8) and (out[:8] < 64).all() and (out[8:] > 192).all()  # turned: black half on top


def test_exif_orientation_1_is_still_plain(tmp_path):
    path = save(tmp_path / "upright.jpg", photo(32, 32, "RGB"), "RGB", exif=exif_with_orientation(1))
    assert decoder_for(header(path)) == "torchvision"


def test_xmp_rotated_jpeg_goes_to_pillow(tmp_path):
    plain = save(tmp_path / "plain.jpg", half_black_half_white(8, 16), "RGB", quality=95)
    path = tmp_path / "xmp.jpg"
    path.write_bytes(with_xmp_orientation(plain.read_bytes(), 6))
    assert decoder_for(header(path)) == "pil"
    assert decode(path, 3, None, True).shape == (3, 16, 8)


def test_cmyk_jpeg_goes_to_pillow(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (9, 7), (0, 0, 0, 0)).save(path)
    assert decoder_for(header(path)) == "pil"
    assert (decode(path, 3, None, True) >= 250).all()  # CMYK (0,0,0,0) is white paper


@pytest.mark.parametrize("kind", ["rgba", "palette_transparent", "gray_trns", "16_bit", "gray_alpha"])
def test_pngs_pillow_handles_specially_go_to_pillow(tmp_path, kind):
    path = tmp_path / f"{kind}.png"
    if kind == "rgba":
        pixels = np.zeros((6, 4, 4), np.uint8)
        pixels[:, :2] = (255, 0, 0, 255)  # left opaque red, right fully transparent
        save(path, pixels, "RGBA")
    elif kind == "palette_transparent":
        img = Image.new("P", (4, 6), 0)
        img.putpalette([255, 0, 0, 0, 0, 0] + [0, 0, 0] * 254)
        img.paste(1, (2, 0, 4, 6))
        img.save(path, transparency=1)
    elif kind == "gray_trns":
        pixels = np.full((6, 4), 200, np.uint8)
        pixels[:, 2:] = 0
        save(path, pixels, "L", transparency=0)
    elif kind == "16_bit":
        Image.fromarray(np.full((6, 4), 40000, np.uint16)).save(path)
    else:
        save(path, np.full((6, 4, 2), (50, 0), np.uint8), "LA")
    assert decoder_for(header(path)) == "pil"
    out = decode(path, 3, None, True)
    if kind in ("rgba", "palette_transparent"):
        assert out[:, :, :2].flatten(1).T.unique(dim=0).tolist() == [[255, 0, 0]]
        assert (out[:, :, 2:] == 255).all()  # transparent -> white, as to_channels composites it
    elif kind in ("gray_trns", "gray_alpha"):
        assert (out[:, :, 2 if kind == "gray_trns" else 0:] == 255).all()
    else:
        assert (out == int(40000 * 255 / 65535)).all()  # 16-bit scaled to 8, truncated as to_channels does


def test_big_jpeg_resized_small_goes_to_pillow_draft(tmp_path):
    path = save(tmp_path / "big.jpg", photo(300, 400, "RGB"), "RGB")
    assert decoder_for(header(path), 32) == "pil"          # Pillow decodes it at 1/8 scale
    assert decoder_for(header(path), 224) == "torchvision"  # too small to draft for 224
    assert decoder_for(header(path), None) == "torchvision"


def test_other_formats_and_non_images_go_to_pillow(tmp_path):
    for name, fmt in (("a.bmp", "BMP"), ("a.webp", "WEBP"), ("a.tif", "TIFF")):
        Image.new("RGB", (8, 8), "red").save(tmp_path / name, fmt)
        assert decoder_for(header(tmp_path / name)) == "pil"
    assert decoder_for(b"hello") == decoder_for(b"") == "pil"


# ----------------------------------------------------------------------------------------------------------------
# 3. bombs, truncated and damaged files: refused as before, with the file named, and never a crash

def with_size(jpeg: bytes, width: int, height: int) -> bytes:
    sof = jpeg.index(b"\xff\xc0")
    return jpeg[:sof + 5] + struct.pack(">HH", height, width) + jpeg[sof + 9:]


def test_bomb_limit_refuses_a_plain_jpeg_whose_header_is_huge(tmp_path, pillow_limit):
    small = save(tmp_path / "small.jpg", photo(16, 16, "RGB"), "RGB").read_bytes()
    bomb = tmp_path / "bomb.jpg"
    bomb.write_bytes(with_size(small, 20_000, 20_000))  # 400 megapixels, over twice Pillow's default limit
    assert decoder_for(header(bomb)) == "pil"
    with pytest.raises(ImageError, match=r"bomb\.jpg: image too large .*--max-image-pixels"):
        decode(bomb, 3, 32, True)


def test_bomb_limit_follows_max_image_pixels_on_the_fast_path(tmp_path, pillow_limit):
    path = save(tmp_path / "whole.jpg", photo(30, 30, "RGB"), "RGB")
    Image.MAX_IMAGE_PIXELS = 400  # as --max-image-pixels 400 sets it: 900 pixels is over twice that
    assert decoder_for(header(path)) == "pil"
    with pytest.raises(ImageError, match=r"whole\.jpg: image too large"):
        decode(path, 3, None, True)
    Image.MAX_IMAGE_PIXELS = 900
    assert decoder_for(header(path)) == "torchvision"


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def damaged_files(tmp_path: Path) -> dict[str, Path]:
    pixels = photo(24, 20, "RGB")
    jpeg = save(tmp_path / "whole.jpg", pixels, "RGB").read_bytes()
    png = save(tmp_path / "whole.png", pixels, "RGB").read_bytes()
    rows = zlib.compress(b"".join(b"\x00" + row.tobytes() for row in pixels))
    bad_stream = rows[:40] + bytes([rows[40] ^ 0xFF]) + rows[41:]
    cases = {
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "truncated.png": png[: len(png) // 2],
        "flipped_byte.png": png[:60] + bytes([png[60] ^ 0xFF]) + png[61:],  # a CRC error inside IDAT
        # right CRCs around a broken deflate stream: torchvision 0.29's decode_png segfaults on this one
        "bad_stream.png": png[:33] + png_chunk(b"IDAT", bad_stream) + png_chunk(b"IEND", b""),
        "short_stream.png": png[:33] + png_chunk(b"IDAT", rows[: len(rows) // 2]) + png_chunk(b"IEND", b""),
        "bad_filter.png": png[:33] + png_chunk(b"IDAT", zlib.compress(b"\x07" + bytes(60) * 24)) +
                          png_chunk(b"IEND", b""),
        "short_gama.png": png[:33] + png_chunk(b"gAMA", b"\x00") + png[33:],  # libpng warns, Pillow refuses
        "text.jpg": b"hello",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    return {name: tmp_path / name for name in cases}


def test_truncated_and_damaged_files_raise_image_error_naming_the_file(tmp_path):
    for name, path in damaged_files(tmp_path).items():
        with pytest.raises(ImageError, match=rf"{name.replace('.', '[.]')}: cannot read image"):
            decode(path, 3, 32, True)


def test_fuzzed_files_decode_alike_on_both_paths(tmp_path):
    """Damaged files give the same outcome either way: the same pixels, or both an ImageError (and no crash)."""
    rnd = random.Random(0)
    originals = [save(tmp_path / "a.jpg", photo(20, 24, "RGB"), "RGB").read_bytes(),
                 save(tmp_path / "b.jpg", photo(20, 24, "L"), "L", progressive=True).read_bytes(),
                 save(tmp_path / "a.png", photo(20, 24, "RGB"), "RGB").read_bytes(),
                 save(tmp_path / "b.png", photo(20, 24, "L"), "L").read_bytes()]
    outcomes = Counter()
    for i in range(240):
        data = bytearray(originals[i % 4])
        for _ in range(rnd.randint(1, 3)):
            pos = rnd.randrange(len(data))
            if rnd.random() < 0.7:
                data[pos] = rnd.randrange(256)
            else:
                del data[pos: pos + rnd.randint(1, 20)]
        path = tmp_path / f"fuzz.{'jpg' if i % 4 < 2 else 'png'}"
        path.write_bytes(bytes(data))
        results = []
        for fast in (True, False):
            try:
                results.append(decode(path, 3, None, fast))
            except ImageError:
                results.append(None)
        fast, pil = results
        assert (fast is None) == (pil is None), f"case {i}: fast {'refused' if fast is None else 'decoded'} it"
        assert fast is None or torch.equal(fast, pil), f"case {i}: the pixels differ"
        outcomes["error" if fast is None else "decoded"] += 1
    assert outcomes["error"] > 20 and outcomes["decoded"] > 20  # both kinds were exercised


def test_decode_files_keeps_order_across_chunks_and_drops_the_bad(tmp_path):
    paths = []
    for i in range(150):  # more than one chunk of 64 per thread
        pixels = np.full((8, 8, 3), i, np.uint8)
        paths.append(save(tmp_path / f"{i:03d}.{'png' if i % 3 else 'jpg'}", pixels, "RGB", quality=95))
    paths[70].write_bytes(b"not an image")
    samples = Samples(torch.arange(150), paths=paths)
    decoded, notes = decode_files(samples, 3, 8, strict=False, keep=True)
    kept = [i for i in range(150) if i != 70]
    assert decoded.labels.tolist() == kept and len(notes) == 1 and "070.png" in notes[0]
    means = decoded.images.float().mean(dim=(1, 2, 3))
    assert (means - torch.tensor(kept, dtype=torch.float)).abs().max() <= 2


# ----------------------------------------------------------------------------------------------------------------
# 4. bytes in memory (dlkit serve's uploads): the same decoder and the same pixels as the file

def files_of_every_kind(tmp_path: Path) -> list[Path]:
    """The fast path (small JPEG and PNG) and every case Pillow keeps: draft mode, rotation, CMYK, alpha, 16-bit."""
    paths = [save(tmp_path / "small.jpg", photo(40, 30, "RGB"), "RGB"),
             save(tmp_path / "gray.png", photo(30, 50, "L"), "L"),
             save(tmp_path / "big.jpg", photo(375, 500, "RGB"), "RGB", quality=90),  # drafted at 1/8 for size 32
             save(tmp_path / "rotated.jpg", photo(40, 60, "RGB"), "RGB", exif=exif_with_orientation(6)),
             save(tmp_path / "alpha.png", np.full((20, 30, 4), 128, np.uint8), "RGBA")]
    Image.new("CMYK", (40, 36), (10, 20, 30, 0)).save(tmp_path / "cmyk.jpg")
    Image.fromarray(np.full((20, 24), 40000, np.uint16)).save(tmp_path / "deep.png")
    return paths + [tmp_path / "cmyk.jpg", tmp_path / "deep.png"]


@pytest.mark.parametrize("size", [None, 32])
def test_bytes_decode_exactly_as_the_same_file(tmp_path, size):
    for path in files_of_every_kind(tmp_path):
        for channels in (1, 3):
            from_file = load_image(path, channels, size)
            from_bytes = load_image_bytes(path.read_bytes(), channels, size, path.name)
            assert torch.equal(from_bytes, from_file), f"{path.name}, {channels} channels, size {size}"


def test_bytes_take_the_decoder_the_file_takes(tmp_path):
    for path in files_of_every_kind(tmp_path):
        from_file, from_bytes = fastdecode.decode(path, 3, 32), fastdecode.decode_bytes(path.read_bytes(), 3, 32)
        assert (from_file is None) == (from_bytes is None), path.name
        assert from_file is None or torch.equal(from_file, from_bytes), path.name
    assert fastdecode.decode_bytes((tmp_path / "small.jpg").read_bytes(), 3, 32) is not None  # fast path taken
    assert fastdecode.decode_bytes((tmp_path / "big.jpg").read_bytes(), 3, 32) is None       # Pillow's draft mode


def test_damaged_bytes_raise_image_error_naming_the_label(tmp_path):
    for name, path in damaged_files(tmp_path).items():
        with pytest.raises(ImageError, match=r"upload 7: cannot read image"):
            load_image_bytes(path.read_bytes(), 3, 32, "upload 7")


# ----------------------------------------------------------------------------------------------------------------
# 5. listing: os.scandir gives what sorted(rglob) gave

def listed_with_rglob(folder: Path) -> tuple[list[Path], Counter]:
    """The listing as it was before scandir: sorted(rglob), hidden parts skipped, files only."""
    files, ignored = [], Counter()
    for path in sorted(folder.rglob("*")):
        if any(part.startswith(".") for part in path.relative_to(folder).parts) or not path.is_file():
            continue
        if path.suffix.lower() in (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"):
            files.append(path)
        else:
            ignored[path.suffix.lower() or "(no extension)"] += 1
    return files, ignored


def test_scandir_listing_matches_sorted_rglob(tmp_path):
    root = tmp_path / "cls"
    for rel in ["a/x.jpg", "a.b/y.jpg", "a-b/z.PNG", "a.jpg", "A.JPG", ".hidden/q.jpg", ".h.jpg", "n/deep/er/w.webp",
                "readme.txt", "noext", "trail.", "B/1.jpg", "b/1.jpg", "10.jpg", "9.jpg", "é.jpg", "e.jpg"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "o.jpg").write_bytes(b"x")
    if hasattr(os, "symlink"):
        try:
            os.symlink(tmp_path / "elsewhere", root / "linked_dir")          # rglob does not enter it
            os.symlink(tmp_path / "elsewhere" / "o.jpg", root / "link.jpg")  # a file link counts
            os.symlink(tmp_path / "missing.jpg", root / "broken.jpg")       # a broken one does not
        except OSError:
            pass
    found = folders.FileList()
    folders.images_below(root, found, "cls")
    files, ignored = listed_with_rglob(root)
    assert found.files == files and found.ignored == ignored and found.names == ["cls"] * len(files)
    assert all(isinstance(p, Path) for p in found.files)
