"""The explanation picture: the photo beside the photo with its heat map over it, titled with the class explained."""
from __future__ import annotations

import torch

from .figures import subplots


ALPHA = 0.45  # the heat map's share of each pixel: the photo still shows through


def overlay_figure(image: torch.Tensor, heat: torch.Tensor, title: str, caption: str = ""):
    """uint8 CxHxW photo and an HxW map in [0,1] (1 = where the network looked most) -> a matplotlib Figure.

    Two panels, so a small image's content is still visible beside the coloured one; the title names the class
    and its probability, the caption how the map was made (method and layer). The axes sit at fixed places (no
    tight_layout, no colorbar axes) and the heat map is blended into the photo here: drawing is most of an
    explanation's cost for a small network, and this took it from ~1.5 s to ~0.3 s a picture on a busy 2-core CPU."""
    from .fonts import readable

    photo = _rgb(image)
    blended = blend(image, heat).permute(1, 2, 0).numpy() / 255  # composited here: one image per panel draws quicker
    fig, (left, right) = subplots(1, 2, figsize=(4.8, 2.9))
    for ax, x, picture in ((left, 0.02, photo), (right, 0.52, blended)):
        ax.set_position((x, 0.1, 0.46, 0.72))
        ax.imshow(picture, vmin=0, vmax=1, interpolation="nearest")
        ax.axis("off")
    left.set_title("input", fontsize=8)
    right.set_title("where it looked (red: most)", fontsize=8)
    fig.suptitle(readable([title], numbered=False)[0], fontsize=10, y=0.97)
    if caption:
        fig.text(0.5, 0.015, caption, ha="center", va="bottom", fontsize=7, color="#555")
    return fig


def _rgb(image: torch.Tensor):
    """uint8 CxHxW (1 or 3 channels) -> HxWx3 floats in [0,1]."""
    photo = image.float().div(255).clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    return photo.repeat(3, axis=2) if photo.shape[2] == 1 else photo


def blend(image: torch.Tensor, heat: torch.Tensor) -> torch.Tensor:
    """The photo with the heat map (jet colours) over it, as a uint8 3xHxW image: what the report and the serve
    page show, without a figure."""
    from matplotlib import colormaps

    colours = colormaps["jet"](heat.float().clamp(0, 1).cpu().numpy())[..., :3]
    mixed = (1 - ALPHA) * _rgb(image) + ALPHA * colours
    return torch.from_numpy((mixed * 255).round().clip(0, 255).astype("uint8")).permute(2, 0, 1)
