"""Training: forcing, losses, optimisers, fit, checkpoints."""
