"""The learning-rate schedule: a pure function of the step."""

from __future__ import annotations

import math

from charnn.config import TrainConfig

COSINE_FLOOR = 0.1


def lr_at(step: int, cfg: TrainConfig, total_steps: float) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warm-up, then constant or cosine to 10%."""
    if cfg.warmup and step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    if cfg.schedule == "constant":
        return cfg.lr
    span = max(total_steps - cfg.warmup, 1)
    progress = min(max(step - cfg.warmup, 0) / span, 1.0)
    return cfg.lr * (COSINE_FLOOR + (1 - COSINE_FLOOR) * 0.5 * (1 + math.cos(math.pi * progress)))
