"""Hyperparameter sweeps (Optuna): above training and cross-validation, whose runs its trials are."""
