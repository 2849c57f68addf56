"""charnn: train character-level recurrent language models on any text and generate from them.

    import charnn
    result = charnn.train("runs/demo", preset="small")
    print(charnn.generate("runs/demo", start="ROMEO: ", length=300, seed=1))
    print(charnn.evaluate("runs/demo")["nats_per_char"])

Heavy modules (torch) load on first use, so `charnn --help` stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "train": "charnn.training.run",
    "TrainResult": "charnn.training.loop",
    "load": "charnn.api",
    "generate": "charnn.api",
    "evaluate": "charnn.api",
    "ModelConfig": "charnn.config",
    "TrainConfig": "charnn.config",
    "PRESETS": "charnn.presets",
    "SamplingConfig": "charnn.config",
    "LoadedModel": "charnn.store.model_dir",
    "CharRNN": "charnn.nn.model",
    "Vocab": "charnn.text.vocab",
    "LossReport": "charnn.evaluation",
    "CharnnError": "charnn.errors",
}

__all__ = [
    "PRESETS",
    "CharRNN",
    "CharnnError",
    "LoadedModel",
    "LossReport",
    "ModelConfig",
    "SamplingConfig",
    "TrainConfig",
    "TrainResult",
    "Vocab",
    "__version__",
    "evaluate",
    "generate",
    "load",
    "train",
]

if TYPE_CHECKING:
    from charnn.api import evaluate, generate, load
    from charnn.config import ModelConfig, SamplingConfig, TrainConfig
    from charnn.errors import CharnnError
    from charnn.evaluation import LossReport
    from charnn.nn.model import CharRNN
    from charnn.presets import PRESETS
    from charnn.store.model_dir import LoadedModel
    from charnn.text.vocab import Vocab
    from charnn.training.loop import TrainResult
    from charnn.training.run import train


def __getattr__(name: str) -> object:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'charnn' has no attribute {name!r}")
