"""The loss registry: (logits, labels) -> scalar, by name. Below the tasks, which pick their loss from it."""
from __future__ import annotations

import torch.nn.functional as F

from .registry import Registry

LOSSES: Registry = Registry("loss")


@LOSSES.register("cross-entropy", help="softmax cross-entropy (with optional label smoothing)")
def cross_entropy(label_smoothing: float = 0.0):
    return lambda logits, labels: F.cross_entropy(logits, labels, label_smoothing=label_smoothing)


def _on_probabilities(fn):
    """Regression losses compare softmax probabilities with one-hot targets."""
    def make(label_smoothing: float = 0.0):
        def loss(logits, labels):
            probs = logits.float().softmax(1)
            return fn(probs, F.one_hot(labels, logits.shape[1]).to(probs.dtype))
        return loss
    return make


LOSSES.register("mse", help="squared error between softmax probabilities and one-hot labels")(_on_probabilities(F.mse_loss))
LOSSES.register("l1", help="absolute error between softmax probabilities and one-hot labels")(_on_probabilities(F.l1_loss))
LOSSES.register("huber", help="Huber loss between softmax probabilities and one-hot labels")(_on_probabilities(F.huber_loss))


