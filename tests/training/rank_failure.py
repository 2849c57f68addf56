"""Run the charnn CLI under torchrun with rank 1 failing at its fourth step (used by test_distributed)."""

import sys

from charnn.cli import main
from charnn.config import torchrun_ranks
from charnn.training.step import TrainStep

if torchrun_ranks()[0] == 1:
    original = TrainStep.__call__
    steps = []

    def failing_step(self, *args, **kwargs):
        steps.append(1)
        if len(steps) == 4:
            raise RuntimeError("rank 1 fails on purpose")
        return original(self, *args, **kwargs)

    TrainStep.__call__ = failing_step

sys.exit(main(sys.argv[1:]))
