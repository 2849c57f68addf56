"""Training: one optimiser step, the loop, saving and restoring its state, and running it (torchrun too)."""
