"""The fast small-image network of the `fast` recipe, after airbench (Keller Jordan, arXiv 2404.00498).

Its parts, each for a reason the paper measures:
- a frozen 2x2 "patch-whitening" first layer, set from the training images' patch covariance (init_from_data):
  the first layer's job is done before the first step;
- three conv groups (conv, max-pool, BatchNorm, GELU, conv, BatchNorm, GELU) with dirac-initialised filters and
  BatchNorm scales frozen at 1 (only the shifts learn) with a low running-statistics momentum;
- a global max-pool and a linear head scaled down by its width.
The filters are stored flattened (out x in*k*k), so `torch.optim.Muon`, which takes 2-D parameters, can train them
(the `muon` optimizer); the convolution reshapes them back, which costs nothing.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import Classifier
from .registry import MODELS

WIDTHS = (64, 256, 256)  # airbench94's, for a GPU; the `fast` recipe picks narrower ones on a CPU


class FlatConv(nn.Module):
    """A 3x3 'same' convolution without bias whose weight is kept as a matrix (out, in*3*3); dirac-initialised on
    the first `in` filters so each group starts close to passing its input through."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 3):
        super().__init__()
        self.shape = (out_channels, in_channels, kernel, kernel)
        weight = torch.empty(self.shape)
        nn.init.kaiming_uniform_(weight, a=math.sqrt(5))  # nn.Conv2d's own default
        nn.init.dirac_(weight[:in_channels])
        self.weight = nn.Parameter(weight.reshape(out_channels, -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight.view(self.shape), padding=self.shape[-1] // 2)

    def macs_per_image(self, out: torch.Tensor) -> int:
        """Multiply-accumulates per image, as for nn.Conv2d (read by dlkit's model summary)."""
        return out[0].numel() * self.weight.shape[1]

    def extra_repr(self) -> str:
        out, inp, k, _ = self.shape
        return f"{inp}, {out}, kernel_size=({k}, {k}), flattened"


def frozen_scale_batchnorm(channels: int) -> nn.BatchNorm2d:
    """BatchNorm whose scale stays 1 (only the shift learns), with running statistics that follow fast."""
    norm = nn.BatchNorm2d(channels, eps=1e-12, momentum=0.4)
    norm.weight.requires_grad_(False)
    return norm


class ConvGroup(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1, self.norm1 = FlatConv(in_channels, out_channels), frozen_scale_batchnorm(out_channels)
        self.conv2, self.norm2 = FlatConv(out_channels, out_channels), frozen_scale_batchnorm(out_channels)
        self.pool = nn.MaxPool2d(2)  # a module, so layer-wise tools (Grad-CAM, summaries) see the spatial maps
        self.activ = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.activ(self.norm1(self.pool(self.conv1(x))))
        return self.activ(self.norm2(self.conv2(x)))


class PatchWhitening(nn.Conv2d):
    """A frozen 2x2 convolution whose filters are the eigenvectors of the training patches' covariance, each scaled
    by 1/sqrt(its eigenvalue), and their negatives: its outputs' covariance over those patches is the identity."""

    def __init__(self, in_channels: int, kernel: int = 2):
        super().__init__(in_channels, 2 * in_channels * kernel * kernel, kernel, padding=0, bias=True)
        self.weight.requires_grad_(False)

    @torch.no_grad()
    def init_from(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        c, (h, w) = images.shape[1], self.kernel_size
        patches = images.float().unfold(2, h, 1).unfold(3, w, 1).transpose(1, 3).reshape(-1, c * h * w)
        covariance = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance.double())
        scaled = (eigenvectors.T / torch.sqrt(eigenvalues.clamp_min(0) + eps)[:, None]).float().reshape(-1, c, h, w)
        self.weight.copy_(torch.cat((scaled, -scaled)).to(self.weight))


class AirbenchNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, widths: tuple[int, int, int]):
        super().__init__()
        self.whiten = PatchWhitening(in_channels)
        self.layers = nn.Sequential(nn.GELU(), ConvGroup(self.whiten.out_channels, widths[0]),
                                    ConvGroup(widths[0], widths[1]), ConvGroup(widths[1], widths[2]))
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(widths[2], num_classes, bias=False)
        self.scale = 1.0 / widths[2]  # the head's output divided by its width: airbench's "scaled linear head"
        with torch.no_grad():
            self.head.weight /= self.head.weight.std()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.layers(self.whiten(x))).flatten(1)
        return self.head(x) * self.scale


class FastNet(Classifier):
    """Classifier around AirbenchNet, with the two hooks the trainer looks for: init_from_data (the whitening
    layer, from normalised training images) and lr_scales (the SGD-trained groups' rates relative to Muon's)."""

    # airbench94_muon's rates for a summed loss: biases 0.053, head 0.67, against Muon's 0.24 for the filters
    lr_scales = {"head": 0.67 / 0.24, "bias": 0.053 / 0.24}

    def init_from_data(self, images: torch.Tensor) -> None:
        self.net.whiten.init_from(images[:5000])


@MODELS.register("airbench", default_size=32, min_size=16,  # 2x2 whitening then 3 poolings: 16 -> 1
                 help="airbench's fast net: frozen patch whitening, 3 conv groups, Muon-ready (widths=64,256,256)")
def airbench(in_channels: int, num_classes: int, image_size: int, widths: tuple = WIDTHS) -> Classifier:
    widths = tuple(int(w) for w in (widths if isinstance(widths, (list, tuple)) else (widths,) * 3))
    if len(widths) != 3 or min(widths) < 1:
        from ..errors import UserError

        raise UserError(f"airbench: widths takes three positive numbers, e.g. widths=64,256,256 (got {widths})")
    return FastNet(AirbenchNet(in_channels, num_classes, widths), "head")
