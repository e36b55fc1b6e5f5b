"""The explanation picture: the photo beside the photo with its heat map over it, titled with the class explained."""
from __future__ import annotations

import torch

from .figures import subplots


def overlay_figure(image: torch.Tensor, heat: torch.Tensor, title: str, caption: str = ""):
    """uint8 CxHxW photo and an HxW map in [0,1] (1 = where the network looked most) -> a matplotlib Figure.

    Two panels, so a small image's content is still visible beside the coloured one; the title names the class
    and its probability, the caption how the map was made (method and layer). The axes sit at fixed places (no
    tight_layout, no colorbar axes): drawing is most of an explanation's cost for a small network, and this
    layout draws in about a third of the time."""
    from .fonts import readable

    photo = image.float().div(255).clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    gray = photo.shape[2] == 1
    photo = photo[:, :, 0] if gray else photo
    fig, (left, right) = subplots(1, 2, figsize=(4.8, 2.9))
    for ax, x in ((left, 0.02), (right, 0.52)):
        ax.set_position((x, 0.1, 0.46, 0.72))
        ax.imshow(photo, cmap="gray" if gray else None, vmin=0, vmax=1, interpolation="nearest")
        ax.axis("off")
    right.imshow(heat.float().cpu().numpy(), cmap="jet", alpha=0.45, vmin=0, vmax=1, interpolation="bilinear")
    left.set_title("input", fontsize=8)
    right.set_title("where it looked (red: most)", fontsize=8)
    fig.suptitle(readable([title], numbered=False)[0], fontsize=10, y=0.97)
    if caption:
        fig.text(0.5, 0.015, caption, ha="center", va="bottom", fontsize=7, color="#555")
    return fig
