"""Run the charnn CLI under torchrun with rank 1 failing at its fourth step (used by test_distributed)."""

import os
import sys

import charnn.training.loop
from charnn.cli import main

if os.environ.get("RANK") == "1":
    original = charnn.training.loop.Trainer._train_step

    def failing_step(self, x, y):
        if self.step == 3:
            raise RuntimeError("rank 1 fails on purpose")
        return original(self, x, y)

    charnn.training.loop.Trainer._train_step = failing_step

sys.exit(main(sys.argv[1:]))
