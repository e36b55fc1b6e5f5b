"""The curriculum's networks (d2l and the beginner course), each adapting to channels, image size and classes.

Every builder takes (in_channels, num_classes, image_size, **options) and returns a Classifier.
Where the input is small (under 64 px), the ImageNet-sized stems shrink so the network still fits.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import Classifier
from .registry import MODELS


class Flatten(nn.Flatten):
    """nn.Flatten whose gradient goes back in the layout its input came in.

    Flattening a channels_last feature map copies it into NCHW order, so its gradient arrives in NCHW, and the
    layer before (a pooling backward) takes PyTorch's slow mixed-layout path: LeNet's last pool took 740 us instead
    of ~100 per step on a CPU in bf16, 6-9% of the step. Handing the gradient back channels_last avoids that.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.requires_grad and x.dim() == 4 and not x.is_contiguous()
                and x.is_contiguous(memory_format=torch.channels_last) and not torch.compiler.is_compiling()):
            x.register_hook(lambda grad: grad.contiguous(memory_format=torch.channels_last))
        return super().forward(x)


def _with_head(features: nn.Module, in_channels: int, image_size: int, head: list[nn.Module]) -> Classifier:
    """features -> flatten -> head, with the first Linear's input size found by a trial forward."""
    with torch.no_grad():
        flat = features(torch.zeros(1, in_channels, image_size, image_size)).flatten(1).shape[1]
    first = next(i for i, m in enumerate(head) if isinstance(m, nn.LazyLinear))
    head[first] = nn.Linear(flat, head[first].out_features)
    net = nn.Sequential(features, Flatten(), *head)
    return Classifier(net, str(len(net) - 1))


def _init_xavier(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        nn.init.xavier_uniform_(module.weight)


@MODELS.register("softmax", default_size=28, help="softmax regression: one linear layer on the pixels")
def softmax(in_channels: int, num_classes: int, image_size: int) -> Classifier:
    net = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size**2, num_classes))
    return Classifier(net, "1")


@MODELS.register("mlp", default_size=28, help="multilayer perceptron with ReLU and dropout (hidden=256,128 dropout=0.2)")
def mlp(in_channels: int, num_classes: int, image_size: int, hidden: tuple = (256, 128), dropout: float = 0.2) -> Classifier:
    hidden = (hidden,) if isinstance(hidden, int) else tuple(hidden)
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_channels * image_size**2
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
        width = h
    net = nn.Sequential(*layers, nn.Linear(width, num_classes))
    return Classifier(net, str(len(net) - 1))


@MODELS.register("lenet", default_size=28, min_size=12, help="LeNet-5 as in d2l: sigmoid, average pooling, Xavier init")
def lenet(in_channels: int, num_classes: int, image_size: int) -> Classifier:
    features = nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=2), nn.Sigmoid(), nn.AvgPool2d(2, 2),
        nn.Conv2d(6, 16, 5), nn.Sigmoid(), nn.AvgPool2d(2, 2),
    )
    model = _with_head(features, in_channels, image_size,
                       [nn.LazyLinear(120), nn.Sigmoid(), nn.Linear(120, 84), nn.Sigmoid(), nn.Linear(84, num_classes)])
    model.apply(_init_xavier)
    return model


@MODELS.register("lenet-modern", default_size=28, min_size=4, help="LeNet with ReLU, max pooling and BatchNorm")
def lenet_modern(in_channels: int, num_classes: int, image_size: int, dropout: float = 0.0) -> Classifier:
    pad = 2 if image_size < 20 else 0  # keep the second conv from eating a small image
    features = nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=2), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2, 2),
        nn.Conv2d(6, 16, 5, padding=pad), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2, 2),
    )
    return _with_head(features, in_channels, image_size, [
        nn.LazyLinear(120), nn.BatchNorm1d(120), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(120, 84), nn.BatchNorm1d(84), nn.ReLU(), nn.Linear(84, num_classes)])


@MODELS.register("quick", default_size=32, min_size=8, help="the CIFAR-10 course net: 3x (conv5 pad2 + maxpool2), 1024->64->classes")
def quick(in_channels: int, num_classes: int, image_size: int) -> Classifier:
    features = nn.Sequential(
        nn.Conv2d(in_channels, 32, 5, padding=2), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 5, padding=2), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2), nn.MaxPool2d(2),
    )
    return _with_head(features, in_channels, image_size, [nn.LazyLinear(64), nn.Linear(64, num_classes)])


@MODELS.register("alexnet", default_size=224, min_size=16, help="AlexNet as in d2l (3x3 stem, stride 1, under 128 px)")
def alexnet(in_channels: int, num_classes: int, image_size: int, hidden: int = 4096, dropout: float = 0.5) -> Classifier:
    big = image_size >= 128  # the 11x11/4 stem and three 3x3/2 pools need at least ~100 px
    if big:
        stem = [nn.Conv2d(in_channels, 96, 11, stride=4, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2)]
    else:
        stem = [nn.Conv2d(in_channels, 96, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
    pool = (lambda: nn.MaxPool2d(3, 2)) if big else (lambda: nn.MaxPool2d(2))
    features = nn.Sequential(
        *stem, nn.Conv2d(96, 256, 5, padding=2), nn.ReLU(), pool(),
        nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(), nn.Conv2d(384, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(), pool(),
    )
    return _with_head(features, in_channels, image_size, [
        nn.LazyLinear(hidden), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes)])


@MODELS.register("vgg11", default_size=224, min_size=8, help="VGG-11 as in d2l (width=1.0; fewer pools on small inputs)")
def vgg11(in_channels: int, num_classes: int, image_size: int, width: float = 1.0, hidden: int = 4096,
          dropout: float = 0.5) -> Classifier:
    arch = ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512))
    pools = min(5, max(1, image_size.bit_length() - 2))  # leave at least 2x2 before the head
    layers: list[nn.Module] = []
    c = in_channels
    for i, (convs, out) in enumerate(arch):
        out = max(8, int(out * width))
        for _ in range(convs):
            layers += [nn.Conv2d(c, out, 3, padding=1), nn.ReLU()]
            c = out
        if i >= 5 - pools:
            layers.append(nn.MaxPool2d(2))
    return _with_head(nn.Sequential(*layers), in_channels, image_size, [
        nn.LazyLinear(hidden), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes)])


def _nin_block(c_in: int, c_out: int, kernel: int, stride: int, padding: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride, padding), nn.ReLU(),
                         nn.Conv2d(c_out, c_out, 1), nn.ReLU(), nn.Conv2d(c_out, c_out, 1), nn.ReLU())


@MODELS.register("nin", default_size=224, min_size=8, help="Network in Network as in d2l: no dense layers, global average pooling (3x3 stem under 128 px)")
def nin(in_channels: int, num_classes: int, image_size: int, dropout: float = 0.5) -> Classifier:
    big = image_size >= 128  # the 11x11/4 stem and three 3x3/2 pools need at least ~100 px
    stem = _nin_block(in_channels, 96, 11, 4, 0) if big else _nin_block(in_channels, 96, 3, 1, 1)
    pool = (lambda: nn.MaxPool2d(3, 2)) if big else (lambda: nn.MaxPool2d(3, 2, padding=1))
    net = nn.Sequential(
        stem, pool(), _nin_block(96, 256, 5, 1, 2), pool(), _nin_block(256, 384, 3, 1, 1), pool(),
        nn.Dropout(dropout), nn.Conv2d(384, num_classes, 3, 1, 1), nn.ReLU(),
        nn.Conv2d(num_classes, num_classes, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return Classifier(net, "9")


class Inception(nn.Module):
    """Four parallel paths (1x1; 1x1-3x3; 1x1-5x5; pool-1x1) concatenated on channels."""

    def __init__(self, c_in: int, c1: int, c2: tuple, c3: tuple, c4: int):
        super().__init__()
        self.p1 = nn.Sequential(nn.Conv2d(c_in, c1, 1), nn.ReLU())
        self.p2 = nn.Sequential(nn.Conv2d(c_in, c2[0], 1), nn.ReLU(), nn.Conv2d(c2[0], c2[1], 3, padding=1), nn.ReLU())
        self.p3 = nn.Sequential(nn.Conv2d(c_in, c3[0], 1), nn.ReLU(), nn.Conv2d(c3[0], c3[1], 5, padding=2), nn.ReLU())
        self.p4 = nn.Sequential(nn.MaxPool2d(3, 1, padding=1), nn.Conv2d(c_in, c4, 1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.p1(x), self.p2(x), self.p3(x), self.p4(x)], dim=1)


@MODELS.register("googlenet", default_size=224, min_size=8, help="GoogLeNet (Inception v1) as in d2l")
def googlenet(in_channels: int, num_classes: int, image_size: int) -> Classifier:
    pool = lambda: nn.MaxPool2d(3, 2, padding=1)  # noqa: E731
    if image_size >= 64:
        b1 = nn.Sequential(nn.Conv2d(in_channels, 64, 7, 2, 3), nn.ReLU(), pool())
    else:
        b1 = nn.Sequential(nn.Conv2d(in_channels, 64, 3, 1, 1), nn.ReLU())
    b2 = nn.Sequential(nn.Conv2d(64, 64, 1), nn.ReLU(), nn.Conv2d(64, 192, 3, padding=1), nn.ReLU(), pool())
    b3 = nn.Sequential(Inception(192, 64, (96, 128), (16, 32), 32), Inception(256, 128, (128, 192), (32, 96), 64), pool())
    b4 = nn.Sequential(Inception(480, 192, (96, 208), (16, 48), 64), Inception(512, 160, (112, 224), (24, 64), 64),
                       Inception(512, 128, (128, 256), (24, 64), 64), Inception(512, 112, (144, 288), (32, 64), 64),
                       Inception(528, 256, (160, 320), (32, 128), 128), pool())
    b5 = nn.Sequential(Inception(832, 256, (160, 320), (32, 128), 128), Inception(832, 384, (192, 384), (48, 128), 128),
                       nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return Classifier(nn.Sequential(b1, b2, b3, b4, b5, nn.Linear(1024, num_classes)), "5")


class Residual(nn.Module):
    """Two 3x3 conv-BN layers plus the input (through a 1x1 conv when the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
                         if stride != 1 or c_in != c_out else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


@MODELS.register("resnet18", default_size=224, min_size=4,
                 help="ResNet-18 as in d2l (3x3 stem without pooling under 64 px; width=1.0 scales the channels)")
def resnet18(in_channels: int, num_classes: int, image_size: int, width: float = 1.0) -> Classifier:
    widths = [max(8, round(w * width)) for w in (64, 128, 256, 512)]
    if image_size >= 64:
        stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 7, 2, 3, bias=False), nn.BatchNorm2d(widths[0]),
                             nn.ReLU(), nn.MaxPool2d(3, 2, 1))
    else:
        stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
    stages, c = [], widths[0]
    for i, w in enumerate(widths):
        stride = 1 if i == 0 else 2
        stages.append(nn.Sequential(Residual(c, w, stride), Residual(w, w)))
        c = w
    net = nn.Sequential(stem, *stages, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))
    return Classifier(net, str(len(net) - 1))
