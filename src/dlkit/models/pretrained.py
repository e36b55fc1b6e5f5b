"""Pretrained weights by name (`--weights imagenet`): torchvision's own weights for a `tv:` model, through its
weights API (the URL and the SHA-256 prefix in the file name) and torch.hub's cache, downloaded only when asked for.

The file is fetched once into torch.hub's cache (`$TORCH_HOME/hub/checkpoints`, as `torchvision.models.resnet18(
weights=...)` would), its hash checked before it is kept, then read as plain tensors like any local --weights file.
Offline, one line says where to put the file. DLKIT_WEIGHTS_MIRROR=URL serves the same file names from another
place (a company mirror, or the test's server on 127.0.0.1).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from .zoo import TV_PREFIX

NAMED = ("imagenet",)  # --weights values that name weights instead of a file
MIRROR_ENV = "DLKIT_WEIGHTS_MIRROR"
HASH_IN_NAME = re.compile(r"-([a-f0-9]+)\.")  # torch.hub's rule: resnet18-f37072fd.pth holds a SHA-256 prefix


@dataclass(frozen=True)
class Pretrained:
    model: str        # torchvision's name, e.g. resnet18
    weights: str      # the enum member, e.g. ResNet18_Weights.IMAGENET1K_V1
    url: str          # where it is fetched from (the mirror's, when one is set)
    file: Path        # where torch.hub keeps it

    @property
    def at_hand(self) -> bool:
        return self.file.is_file()


def is_named(weights: str | None) -> bool:
    return isinstance(weights, str) and weights.lower() in NAMED


def pretrained_for(model: str) -> Pretrained:
    """torchvision's default ImageNet weights for a `tv:` model: its URL and its place in torch.hub's cache."""
    if not model.startswith(TV_PREFIX):
        raise UserError(f"--weights imagenet is for torchvision models (tv:<name>, e.g. --model tv:resnet18); "
                        f"{model} has no published weights: pass --weights FILE")
    import torch

    name = model[len(TV_PREFIX):]
    label, url = torchvision_default(name)
    mirror = os.environ.get(MIRROR_ENV)
    if mirror:
        url = mirror.rstrip("/") + "/" + url.rsplit("/", 1)[-1]
    file = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    return Pretrained(name, label, url, file)


def torchvision_default(name: str) -> tuple[str, str]:
    """(the weights' name, their URL) from torchvision's weights API: the DEFAULT member of the model's enum."""
    from torchvision import models

    try:
        weights = models.get_model_weights(name).DEFAULT
    except (ValueError, KeyError):
        raise UserError(f"torchvision publishes no weights for {name}; pass --weights FILE") from None
    return f"{type(weights).__name__}.{weights.name}", weights.url


def fetch(pretrained: Pretrained) -> Path:
    """The cached file, downloaded first if missing; its SHA-256 must start with the prefix its name holds."""
    if pretrained.at_hand:
        return pretrained.file
    import torch

    match = HASH_IN_NAME.search(pretrained.file.name)
    pretrained.file.parent.mkdir(parents=True, exist_ok=True)
    try:  # torch.hub writes a temporary file beside the target and renames it only once the hash matched
        torch.hub.download_url_to_file(pretrained.url, str(pretrained.file), match.group(1) if match else None,
                                       progress=False)
    except RuntimeError as e:
        if "invalid hash" in str(e):
            raise UserError(f"the weights downloaded from {pretrained.url} do not match the SHA-256 prefix in their "
                            "name: refused, nothing kept") from None
        raise
    except OSError as e:  # URLError and HTTPError are OSErrors: offline, blocked, not found
        raise UserError(f"could not download {pretrained.weights} from {pretrained.url} ({_reason(e)}); without "
                        f"internet, put that file at {pretrained.file}, or pass --weights FILE") from None
    return pretrained.file


def _reason(error: OSError) -> str:
    return str(getattr(error, "reason", None) or error).splitlines()[0][:100]
