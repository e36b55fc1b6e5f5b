"""The fast decode path: plain 8-bit JPEG and PNG files decoded by torchvision's image ops, chosen from the header.

torchvision's libjpeg-turbo/libpng ops decode a small JPEG in about a third of Pillow's time, a small PNG in about half
(most of Pillow's time is per-file Python), to the same pixels. They skip what Pillow does for dlkit (EXIF/XMP rotation,
draft mode, alpha and palettes, 16-bit, CMYK, the bomb limit), so `decoder_for` reads the header and sends every such
file, and anything it does not recognise, to Pillow; so does every file the fast path fails on.
"""
from __future__ import annotations

import os
import struct
import threading
import zlib

import torch

HEAD_BYTES = 64 * 1024   # read first: the markers/chunks before the pixels (EXIF blocks are at most 64 KiB)
DRAFT_MIN_PIXELS = 256 * 256  # a JPEG this big that Pillow can draft at 1/2 or less decodes faster there (measured)
PIL_LUMA = (19595, 38470, 7471)  # Pillow's RGB -> L weights (0.299, 0.587, 0.114) in 16-bit fixed point
ENABLED = os.environ.get("DLKIT_FAST_DECODE", "1") != "0"  # 0: Pillow decodes everything (to compare, or rule it out)
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_BINARY", 0)  # binary on Windows

_JPEG_SOF_PLAIN = {0xC0, 0xC1, 0xC2}  # baseline, extended sequential, progressive (Huffman): what both decoders share
_JPEG_SOF_OTHER = set(range(0xC3, 0xD0)) - {0xC4, 0xC8, 0xCC}  # lossless, hierarchical, arithmetic: Pillow's call
# PNG chunks that change no decoded pixel in either decoder; any other (tRNS, eXIf, APNG frames, ...) goes to Pillow
_PNG_HARMLESS = {b"IHDR", b"IDAT", b"IEND", b"PLTE", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"sBIT", b"pHYs", b"tIME",
                 b"bKGD", b"hIST", b"sPLT", b"tEXt", b"zTXt", b"iTXt"}
_PNG_ROTATING_TEXT = (b"Raw profile type exif", b"XML:com.adobe.xmp")  # Pillow reads an orientation from these
# sizes Pillow insists on ("Truncated gAMA chunk") where libpng only warns: a wrong one goes to Pillow, to refuse it
_PNG_SIZES = {b"IHDR": 13, b"gAMA": 4, b"cHRM": 32, b"pHYs": 9, b"sRGB": 1, b"tIME": 7}


def decoder_for(header: bytes, size: int | None = None) -> str:
    """"torchvision" for a plain 8-bit gray/RGB JPEG or PNG within Pillow's pixel limit, "pil" for anything else.

    Args:
        header: the file's first bytes (HEAD_BYTES of them, or all of it).
        size: the side the image will be resized to, if any: a big JPEG Pillow can draft-decode goes to Pillow.
    """
    if header[:3] == b"\xff\xd8\xff":
        info = _jpeg_info(header)
    elif header[:8] == b"\x89PNG\r\n\x1a\n":
        info = _png_info(header)
    else:
        return "pil"
    if info is None or not _within_pixel_limit(*info[1:]):
        return "pil"
    kind, width, height = info
    if kind == "jpeg" and size and _draft_pays(width, height, size):
        return "pil"
    return "torchvision"


def decode(path, channels: int, size: int | None = None) -> torch.Tensor | None:
    """uint8 [channels, H, W] through torchvision's ops, or None where Pillow should decode `path` (see decoder_for).

    A file that fails here is left to Pillow too, so an unreadable file is refused with Pillow's own message.
    """
    ops = image_ops()
    if ops is None:
        return None
    fd = os.open(path, _OPEN_FLAGS)  # no file object: a third of the cost of open()
    try:
        head = os.read(fd, HEAD_BYTES)
        if decoder_for(head, size) != "torchvision":
            return None
        data = bytearray(head)
        if len(head) == HEAD_BYTES:  # else that was the whole file
            while chunk := os.read(fd, 1 << 20):
                data += chunk
    finally:
        os.close(fd)
    return _decode_whole(ops, data, channels)


def decode_bytes(data: bytes, channels: int, size: int | None = None) -> torch.Tensor | None:
    """`decode` for a whole file already in memory (an upload): the same choice and the same pixels, no file."""
    ops = image_ops()
    if ops is None or decoder_for(data[:HEAD_BYTES], size) != "torchvision":
        return None
    return _decode_whole(ops, bytearray(data), channels)  # a writable copy: torch.frombuffer wants one (~10 us)


def _decode_whole(ops, data: bytearray, channels: int) -> torch.Tensor | None:
    jpeg = data[:2] == b"\xff\xd8"
    if not (_jpeg_complete(data) if jpeg else _png_sound(bytes(data))):
        return None  # truncated or damaged: Pillow refuses it with its own message
    buffer = torch.frombuffer(data, dtype=torch.uint8)
    try:
        image = (ops.decode_jpeg if jpeg else ops.decode_png)(buffer, 0, False)  # 0: the channels as stored
    except RuntimeError:
        return None
    # the ops return an HWC buffer viewed as CHW: left as that view, since every consumer copies it anyway (into a
    # batch, or the decoded folder's tensor), and a copy here cost 12% of a small JPEG's decode
    return match_channels(image, channels)


def match_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    """uint8 CxHxW gray or RGB -> `channels`, exactly as Pillow's convert("L") / convert("RGB") would."""
    have = image.shape[0]
    if have == channels:
        return image
    if channels == 3:
        return image.expand(3, -1, -1).contiguous()
    r, g, b = image.to(torch.int32).unbind(0)
    luma = (r * PIL_LUMA[0] + g * PIL_LUMA[1] + b * PIL_LUMA[2] + 0x8000) >> 16
    return luma.to(torch.uint8).unsqueeze(0)


_ops_lock = threading.Lock()
_ops_state: list = []  # [] until tried, then [ops or None]


def image_ops():
    """torch.ops.image (torchvision's decoders), loaded on first use; None when unavailable (Pillow decodes all)."""
    if not _ops_state:
        with _ops_lock:
            if not _ops_state:
                _ops_state.append(_load_image_ops())
    return _ops_state[0]


def _load_image_ops():
    """Load torchvision's image library alone (10 ms; `import torchvision` costs ~1.5 s that a run may not need),
    or through torchvision.io where that fails; then check that the ops round-trip a tiny image as expected."""
    for load in (_load_library_alone, _load_through_torchvision):
        try:
            load()
            ops = torch.ops.image
            if _self_test(ops):
                return ops
        except Exception:  # noqa: BLE001 - a missing or changed torchvision only costs the fast path
            continue
    return None


def _load_library_alone() -> None:
    import importlib.machinery
    import importlib.util
    from pathlib import Path

    folder = Path(importlib.util.find_spec("torchvision").submodule_search_locations[0])
    for name in ("image_stable", "image"):
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            if (folder / (name + suffix)).is_file():
                torch.ops.load_library(str(folder / (name + suffix)))
                return
    raise ImportError("torchvision's image library not found")


def _load_through_torchvision() -> None:
    import torchvision.io  # noqa: F401 - registers torch.ops.image


def _self_test(ops) -> bool:
    """The ops' signatures are private to torchvision: use them only if a tiny round trip gives what we expect."""
    pixels = torch.arange(2 * 3 * 4, dtype=torch.uint8).reshape(3, 2, 4) * 10
    png = ops.decode_png(ops.encode_png(pixels, 6), 0, False)
    jpeg = ops.decode_jpeg(ops.encode_jpeg(pixels, 95), 0, False)
    return torch.equal(png, pixels) and jpeg.shape == pixels.shape and jpeg.dtype == torch.uint8


def _within_pixel_limit(width: int, height: int) -> bool:
    """Over Pillow's limit, Pillow decides: it warns or refuses with its own message (and --max-image-pixels)."""
    limit = _pillow().MAX_IMAGE_PIXELS
    return width > 0 and height > 0 and (not limit or width * height <= limit)


def _pillow():
    """PIL.Image, imported on first use (dlkit's import stays light) and then found without an import statement."""
    global _PIL_IMAGE
    if _PIL_IMAGE is None:
        from PIL import Image

        _PIL_IMAGE = Image
    return _PIL_IMAGE


_PIL_IMAGE = None


def _draft_pays(width: int, height: int, size: int) -> bool:
    """Pillow's draft mode decodes a JPEG at 1/2, 1/4 or 1/8 scale (DCT scaling) when both sides are at least twice
    `size`; torchvision has no reduced decode on the CPU, so past a few hundred pixels Pillow is faster."""
    return min(width, height) >= 2 * size and width * height >= DRAFT_MIN_PIXELS


def _jpeg_complete(data: bytearray) -> bool:
    """Ends with EOI (some writers pad after it): libjpeg would fill a truncated file with grey, Pillow refuses it."""
    return bytes(data[-64:]).rstrip(b"\x00\r\n ").endswith(b"\xff\xd9")


def _png_sound(data: bytes) -> bool:
    """Whether libpng will decode this PNG without an error: every chunk known and its CRC right, the IDATs together,
    IEND last, and the pixel stream inflating to exactly the rows IHDR promises, each with a valid filter type.

    torchvision's decode_png (0.29) crashes the process with a segfault on a libpng error instead of raising, so a
    damaged file must never reach it. zlib does this check's work in C: a fraction of Pillow's time per file.
    """
    info = _png_info(data)
    if info is None or len(data) < 45:
        return False
    _, width, height = info
    if max(width, height) > 1_000_000 or data[26] or data[27] or data[28]:  # libpng's limit; compression, filter, Adam7
        return False
    pos, idat, idat_done = 8, [], False
    while pos + 12 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        if end > len(data) or struct.unpack_from(">I", data, end - 4)[0] != zlib.crc32(data[pos + 4: end - 4]):
            return False
        if kind == b"IDAT":
            if idat_done:
                return False
            idat.append(data[pos + 8: end - 4])
        elif idat:
            idat_done = True
        if kind == b"IEND":
            return end == len(data) and bool(idat) and _png_rows_sound(idat, width, height, 1 if data[25] == 0 else 3)
        pos = end
    return False


def _png_rows_sound(idat: list[bytes], width: int, height: int, channels: int) -> bool:
    stride = 1 + width * channels  # a filter-type byte, then the row's 8-bit samples
    inflater = zlib.decompressobj()
    try:
        rows = inflater.decompress(b"".join(idat), height * stride + 1)
    except zlib.error:
        return False
    return (inflater.eof and not inflater.unused_data and len(rows) == height * stride
            and max(rows[::stride]) <= 4)  # filter types 0 (none) to 4 (Paeth)


def _jpeg_info(data: bytes) -> tuple[str, int, int] | None:
    """("jpeg", width, height) for a plain 8-bit 1- or 3-component JPEG that needs no rotation, else None."""
    pos, sof, end = 2, None, len(data) - 4
    while pos <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF or marker == 0xD8 or 0xD0 <= marker <= 0xD7:  # fill byte, or markers without a length
            pos += 1 if marker == 0xFF else 2
            continue
        length = (data[pos + 2] << 8) | data[pos + 3]
        if marker == 0xDA:  # start of scan: every header segment has been seen
            return sof
        if marker in _JPEG_SOF_PLAIN:
            if length < 8 or pos + 10 > len(data):
                return None
            precision, height, width, components = struct.unpack_from(">BHHB", data, pos + 4)
            if precision != 8 or components not in (1, 3):
                return None
            sof = ("jpeg", width, height)
        elif marker in _JPEG_SOF_OTHER or (marker in (0xE1, 0xEE) and
                                           not _jpeg_segment_plain(marker, data[pos + 4: pos + 2 + length])):
            return None
        pos += 2 + length
    return None  # no scan within the bytes read: let Pillow look


def _jpeg_segment_plain(marker: int, body: bytes) -> bool:
    """False for segments that make Pillow's result differ: a rotation (EXIF, XMP) or Adobe's RGB/CMYK transforms."""
    if marker == 0xE1:
        if body.startswith(b"Exif\x00\x00"):
            return _exif_orientation(body[6:]) in (None, 1)
        return b"Orientation" not in body  # XMP: Pillow reads tiff:Orientation when EXIF has none
    if marker == 0xEE and body.startswith(b"Adobe") and len(body) >= 12:
        return body[11] == 1  # transform 1: YCbCr, as plain JFIF; 0 (RGB or CMYK) and 2 (YCCK) go to Pillow
    return True


def _exif_orientation(tiff: bytes) -> int | None:
    """The Orientation tag of IFD0, None when absent; -1 (not plain) when the block cannot be read."""
    try:
        endian = {b"II": "<", b"MM": ">"}[tiff[:2]]
        ifd = struct.unpack_from(endian + "I", tiff, 4)[0]
        count = struct.unpack_from(endian + "H", tiff, ifd)[0]
        for i in range(count):
            tag, kind, _, value = struct.unpack_from(endian + "HHIH", tiff, ifd + 2 + 12 * i)
            if tag == 0x0112:
                return value if kind == 3 else -1
        return None
    except (KeyError, struct.error):
        return -1


def _png_info(data: bytes) -> tuple[str, int, int] | None:
    """("png", width, height) for an 8-bit gray or RGB PNG with no transparency, frames or rotation, else None."""
    if len(data) < 33 or data[12:16] != b"IHDR":
        return None
    width, height, depth, color = struct.unpack_from(">IIBB", data, 16)
    if depth != 8 or color not in (0, 2):  # 0 gray, 2 RGB; palettes, alpha and 16-bit are Pillow's
        return None
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        if kind not in _PNG_HARMLESS or _PNG_SIZES.get(kind, length) != length:
            return None
        if kind in (b"tEXt", b"zTXt", b"iTXt") and data[pos + 8: pos + 8 + length].startswith(_PNG_ROTATING_TEXT):
            return None
        pos += 12 + length
    return "png", width, height


