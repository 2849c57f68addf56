"""charnn: train character-level recurrent language models on any text and generate from them.

    import charnn
    result = charnn.train("runs/demo", preset="small")
    print(charnn.generate("runs/demo", start="ROMEO: ", length=300, seed=1))
    print(charnn.evaluate("runs/demo")["nats_per_char"])

Each command has its function, taking its flags as keywords: train, generate, evaluate, describe (info),
copying, inspect, export_model, serve and benchmark; load reads a model once for several calls.

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
    "describe": "charnn.api",  # charnn info
    "copying": "charnn.copy_report:copying_report",
    "inspect": "charnn.inspection.page",
    "export_model": "charnn.export.folder:export",  # charnn export (charnn.export is its package)
    "serve": "charnn.server",
    "benchmark": "charnn.bench:run",  # charnn bench (charnn.bench is its module)
    "ModelConfig": "charnn.config",
    "TrainConfig": "charnn.config",
    "PRESETS": "charnn.presets",
    "SamplingConfig": "charnn.config",
    "LoadedModel": "charnn.store.model_dir",
    "CharRNN": "charnn.nn.model",
    "Vocab": "charnn.text.vocab",
    "LossReport": "charnn.evaluation",
    "CharnnError": "charnn.errors",
    "Stopped": "charnn.errors",
}

__all__ = [
    "PRESETS",
    "CharRNN",
    "CharnnError",
    "LoadedModel",
    "LossReport",
    "ModelConfig",
    "SamplingConfig",
    "Stopped",
    "TrainConfig",
    "TrainResult",
    "Vocab",
    "__version__",
    "benchmark",
    "copying",
    "describe",
    "evaluate",
    "export_model",
    "generate",
    "inspect",
    "load",
    "serve",
    "train",
]

if TYPE_CHECKING:
    from charnn.api import describe, evaluate, generate, load  # (the other commands' functions: _EXPORTS)
    from charnn.config import ModelConfig, SamplingConfig, TrainConfig
    from charnn.errors import CharnnError, Stopped
    from charnn.evaluation import LossReport
    from charnn.nn.model import CharRNN
    from charnn.presets import PRESETS
    from charnn.store.model_dir import LoadedModel
    from charnn.text.vocab import Vocab
    from charnn.training.loop import TrainResult
    from charnn.training.run import train


def __getattr__(name: str) -> object:
    if name in _EXPORTS:
        module, _, attribute = _EXPORTS[name].partition(":")
        return getattr(importlib.import_module(module), attribute or name)
    raise AttributeError(f"module 'charnn' has no attribute {name!r}")
