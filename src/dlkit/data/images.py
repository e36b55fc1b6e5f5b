"""Reading any image file into a uint8 CxHxW tensor, the one path shared by training, evaluation and prediction."""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from . import fastdecode

# The extensions read as images in training and predict alike, matched case-insensitively: torchvision's ImageFolder
# list and .gif (its first frame; a course's practice set holds a real one, imageNotFound.gif).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


class ImageError(UserError):
    """An image file that cannot be decoded."""


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def open_image(source, draft_size: int | None = None):
    """Open a path or PIL image, fully decoded, upright (EXIF orientation applied).

    draft_size lets JPEG decode at a reduced scale (never below draft_size), much faster for big photos.
    """
    from PIL import Image, ImageOps

    if isinstance(source, Image.Image):
        img = source
    else:
        try:
            img = Image.open(source)
            if draft_size and img.format == "JPEG":
                img.draft(img.mode, (draft_size, draft_size))
            img.load()  # decode everything now: truncated files fail here, not mid-epoch
        except Image.DecompressionBombError as e:
            raise ImageError(f"{source}: image too large ({e}); if you trust it, pass --max-image-pixels N "
                             "(in Python: PIL.Image.MAX_IMAGE_PIXELS = N)") from None
        except (OSError, SyntaxError, ValueError) as e:
            raise ImageError(f"{source}: cannot read image ({e})") from None
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block should not lose an otherwise good image
        return img


def set_max_image_pixels(limit: int | None) -> None:
    """Pillow's decompression-bomb limit (it refuses images over twice this many pixels); None keeps its default."""
    if limit:
        from PIL import Image

        Image.MAX_IMAGE_PIXELS = limit


def to_channels(img, channels: int):
    """Convert any PIL mode (16-bit, palette, alpha, CMYK, ...) to L or RGB."""
    from PIL import Image

    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(img, dtype=np.float64)
        # I;16 is known to be 16-bit; for I and F the depth is unknown, so guess from the values
        sixteen_bit = img.mode.startswith("I;16") or arr.max(initial=0) > 255
        scale = 255.0 / 65535.0 if sixteen_bit else 1.0
        img = Image.fromarray(np.clip(arr * scale, 0, 255).astype(np.uint8), "L")
    if img.mode in ("P", "PA", "LA", "RGBA", "La", "RGBa") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)  # transparent pixels become white, not black
    return img.convert("L" if channels == 1 else "RGB")


def guess_channels(img) -> int:
    return 1 if img.mode in GRAY_MODES or (img.mode == "P" and _palette_is_gray(img)) else 3


def _palette_is_gray(img) -> bool:
    palette = img.getpalette() or []
    return all(palette[i] == palette[i + 1] == palette[i + 2] for i in range(0, len(palette) - 2, 3))


def load_image(source, channels: int, size: int | None = None) -> torch.Tensor:
    """Decode `source` (path, file object or PIL image) to uint8 [channels, H, W]; resized+cropped to `size` if given.

    Plain 8-bit JPEG and PNG files take torchvision's decoders (data/fastdecode.py), everything else Pillow. The
    result may be a strided view (CxHxW over HxWxC memory): `.contiguous()` it where the layout matters.
    """
    tensor = _fast_decode(source, channels, size) if isinstance(source, (str, os.PathLike)) else None
    if tensor is None:
        tensor = _pillow_decode(source, channels, size)
    return resize_center(tensor, size) if size is not None else tensor


def load_image_bytes(data: bytes, channels: int, size: int | None = None, name: str = "image") -> torch.Tensor:
    """load_image for a whole file held in memory (an upload): the same decoder choice, so the same pixels as
    load_image on a file with these bytes. `name` is what an ImageError quotes."""
    tensor = fastdecode.decode_bytes(data, channels, size) if fastdecode.ENABLED else None
    if tensor is None:
        tensor = _pillow_decode(NamedBytes(data, name), channels, size)
    return resize_center(tensor, size) if size is not None else tensor


class NamedBytes(io.BytesIO):
    """A file's bytes in memory, which print as its name (errors quote their source)."""

    def __init__(self, data: bytes, name: str):
        super().__init__(data)
        self.label = name

    def __str__(self) -> str:
        return self.label


def _pillow_decode(source, channels: int, size: int | None) -> torch.Tensor:
    img = to_channels(open_image(source, draft_size=size), channels)
    tensor = torch.from_numpy(np.array(img, dtype=np.uint8, copy=True))
    return tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1).contiguous()


def _fast_decode(path, channels: int, size: int | None) -> torch.Tensor | None:
    if not fastdecode.ENABLED:
        return None
    try:
        return fastdecode.decode(path, channels, size)
    except OSError:  # a missing or unreadable file: Pillow's open says so, in the usual words
        return None


def resize_center(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize the shorter side to `size` (antialiased) and crop the center square. Works on CxHxW or NxCxHxW."""
    h, w = images.shape[-2:]
    if (h, w) == (size, size):
        return images
    from torchvision.transforms.v2 import functional as F  # here: importing torchvision costs ~1.5 s
    if min(h, w) != size:
        images = F.resize_image(images, [size], antialias=True)  # the tensor kernels: no dispatch, half the time
    return F.center_crop_image(images, [size, size])
