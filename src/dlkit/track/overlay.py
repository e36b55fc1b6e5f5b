"""The explanation picture: the photo beside the photo with its heat map over it, titled with the class explained.

Drawn with Pillow, not a matplotlib figure: for a small network the figure was almost all of `--explain`'s cost
(~57 ms a picture against a 4 ms map for quick at 32 px); pasting two panels and two lines of text takes about a
millisecond."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

ALPHA = 0.45      # the heat map's share of each pixel: the photo still shows through
PANEL = 128       # smaller images are enlarged (nearest, by whole factors) to at least this side
LARGEST = 320     # larger ones are shrunk to this
MARGIN = 6
BACKGROUND = (255, 255, 255)
TEXT, GREY = (17, 17, 17), (85, 85, 85)


def overlay_image(image: torch.Tensor, heat: torch.Tensor, title: str, caption: str = ""):
    """uint8 CxHxW photo and an HxW map in [0,1] (1 = where the network looked most) -> a PIL RGB image.

    Two panels, so a small image's content is still visible beside the coloured one; the title names the class
    and its probability, the caption how the map was made (method and layer)."""
    from PIL import Image

    photo = Image.fromarray(_rgb_uint8(image))
    blended = Image.fromarray(blend(image, heat).permute(1, 2, 0).numpy())
    size = _panel_size(photo.size)
    resample = Image.Resampling.NEAREST if size[0] >= photo.size[0] else Image.Resampling.BILINEAR
    photo, blended = photo.resize(size, resample), blended.resize(size, resample)
    title_line, caption_line = text_line(title, 13, TEXT), text_line(
        "input | where it looked (red: most)" + (f"; {caption}" if caption else ""), 10, GREY)
    top = MARGIN + title_line.height
    width = max(2 * size[0] + 3 * MARGIN, title_line.width + 2 * MARGIN, caption_line.width + 2 * MARGIN)
    height = top + size[1] + MARGIN + caption_line.height
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    left = (width - 2 * size[0] - MARGIN) // 2
    canvas.paste(title_line, ((width - title_line.width) // 2, MARGIN // 2))
    canvas.paste(photo, (left, top))
    canvas.paste(blended, (left + size[0] + MARGIN, top))
    canvas.paste(caption_line, ((width - caption_line.width) // 2, top + size[1] + MARGIN // 2))
    return canvas


def _panel_size(size: tuple[int, int]) -> tuple[int, int]:
    """Small images enlarged by a whole factor (pixels stay square blocks) to at least PANEL; large ones shrunk."""
    longest = max(size)
    scale = -(-PANEL // longest) if longest < PANEL else min(1.0, LARGEST / longest)
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


@lru_cache(maxsize=256)
def text_line(text: str, size: int, colour: tuple[int, int, int]):
    """One line of text on the background, as a PIL image, cached: every picture of a run has the same caption,
    and drawing a string costs about as much as the rest of the picture."""
    from PIL import Image, ImageDraw

    f = font(size, text)
    left, top, right, bottom = f.getbbox("Hg蜂" + text)
    line = Image.new("RGB", (max(1, round(f.getlength(text))), bottom - top + 4), BACKGROUND)
    ImageDraw.Draw(line).text((0, 2 - top), text, fill=colour, font=f)
    return line


@lru_cache(maxsize=8)
def _font(size: int, cjk: bool):
    from PIL import ImageFont

    if cjk:
        path = cjk_font_file()
        if path:
            return ImageFont.truetype(path, size)
    return ImageFont.load_default(size=size)  # Pillow's own scalable font (needs FreeType, as every wheel has)


def font(size: int, text: str):
    """A font that draws `text`: Pillow's default, or a CJK font file where the text has Chinese characters."""
    from .fonts import needs_cjk

    return _font(size, needs_cjk(text))


@lru_cache(maxsize=1)
def cjk_font_file() -> str | None:
    """The file of the CJK font the figures use (fonts.cjk_family), for Pillow; None where there is none."""
    from matplotlib import font_manager

    from .fonts import cjk_family

    family = cjk_family()
    if family is None:
        return None
    return font_manager.findfont(font_manager.FontProperties(family=family), fallback_to_default=False)


def _rgb_uint8(image: torch.Tensor) -> np.ndarray:
    """uint8 CxHxW (1 or 3 channels) -> HxWx3 uint8."""
    photo = image.to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return photo.repeat(3, axis=2) if photo.shape[2] == 1 else np.ascontiguousarray(photo)


@lru_cache(maxsize=1)
def _jet_premixed() -> np.ndarray:
    """matplotlib's jet colour map at 256 levels, already times ALPHA, as float32 (looked up per pixel: no
    matplotlib call per image)."""
    from matplotlib import colormaps

    return (ALPHA * 255 * colormaps["jet"](np.linspace(0, 1, 256))[:, :3]).astype(np.float32)


def blend(image: torch.Tensor, heat: torch.Tensor) -> torch.Tensor:
    """The photo with the heat map (jet colours) over it, as a uint8 3xHxW image: what the overlay, the report and
    the serve page show."""
    levels = (heat.float().clamp(0, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)
    mixed = _rgb_uint8(image).astype(np.float32) * (1 - ALPHA) + _jet_premixed()[levels]
    return torch.from_numpy((mixed + 0.5).clip(0, 255).astype(np.uint8)).permute(2, 0, 1)
