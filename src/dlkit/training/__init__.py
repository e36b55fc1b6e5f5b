"""Training: the Trainer and its loop, checkpoints and resume, DDP, the LR finder and sweeps."""
