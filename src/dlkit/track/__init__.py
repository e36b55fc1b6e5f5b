"""Tracking: the run folder, the console, metrics.jsonl and TensorBoard, all as trainer callbacks."""
