"""--batch-size auto: the largest power of two whose training step fits in memory, found by trying."""
from __future__ import annotations

import torch

from ..errors import UserError

OutOfMemory = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
LIMITS = {"cpu": 512}  # the CPU has no out-of-memory error to hit before the kernel's OOM killer: stay modest
DEFAULT_LIMIT = 8192


def trial_step(model: torch.nn.Module, batch: torch.Tensor) -> None:
    """One forward and backward pass, the memory peak of a training step (without optimizer state)."""
    model(batch).float().logsumexp(1).sum().backward()


def find_batch_size(model: torch.nn.Module, shape: tuple[int, ...], device: torch.device, dataset_size: int,
                    start: int = 16) -> int:
    """Double the batch from `start` until a step runs out of memory; the model is left exactly as it was."""
    limit = min(LIMITS.get(device.type, DEFAULT_LIMIT), max(start, dataset_size))
    state = {k: v.clone() for k, v in model.state_dict().items()}  # BatchNorm statistics move in a trial
    was_training = model.training
    model.train()
    best, size = None, start
    try:
        while size <= limit:
            try:
                trial_step(model, torch.randn(size, *shape, device=device))
            except OutOfMemory:
                break
            finally:
                model.zero_grad(set_to_none=True)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            best, size = size, size * 2
    finally:
        model.load_state_dict(state)
        model.train(was_training)
    if best is None:
        raise UserError(f"not even a batch of {start} fits in memory on {device}; use a smaller --image-size or model")
    return best
