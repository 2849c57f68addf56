"""The Python API behind the CLI and the server: load a model, describe it, generate from it, evaluate it.

Keyword settings are the fields declared in config.py (SamplingConfig, GenerateConfig, EvaluateConfig),
with the same names, defaults and checks as the command line's flags.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from pathlib import Path

from charnn.config import EvaluateConfig, GenerateConfig, SamplingConfig
from charnn.declare import build_each
from charnn.errors import NOT_FINITE, DataError, ModelFileError
from charnn.evaluation import EVAL_WINDOW, loss_carried, loss_windows
from charnn.nn.stepper import StepModel, choose_weights
from charnn.sampling import sample, start_text
from charnn.store.model_dir import LoadedModel, as_loaded
from charnn.text.corpus import split, training_text

_LOAD = GenerateConfig()


def load(
    path: str | Path | LoadedModel, device: str = _LOAD.device, verify: bool = _LOAD.verify
) -> LoadedModel:
    """Load a run's best model or a model folder; `verify` checks the weights' sha256. A model already
    loaded is handed back as it is."""
    return as_loaded(path, device, verify)


def describe(model: str | Path | LoadedModel, verify: bool = _LOAD.verify) -> dict:
    """What a model is and how it was trained, as `charnn info --json` and the server's /v1/model show it."""
    loaded = load(model, verify=verify)
    return {
        "path": str(loaded.path),
        "model": loaded.config.to_dict(),
        "parameters": loaded.model.num_parameters(),
        "vocab_size": len(loaded.vocab),
        "vocab": "".join(loaded.vocab.chars),
        "training": loaded.info.get("training", {}),
        "inference": loaded.info.get("inference", {}),
        "generate_weights": {
            "batch_1": weights_for(loaded, "auto", 1),
            "batch_64": weights_for(loaded, "auto", 64),
        },
    }


def weights_for(loaded: LoadedModel, weights: str, batch: int) -> str:
    """The weight format generation runs with: `weights`, or for `auto` what the model's check allows."""
    checks = loaded.info.get("inference", {}).get("val_loss", {})
    return choose_weights(weights, checks if isinstance(checks, dict) else {}, batch, loaded.model.device)


def stream(loaded: LoadedModel, cfg: SamplingConfig, weights: str) -> tuple[str, Iterator[list[str]]]:
    """The start string as it will be used, and an iterator over the generated chars (one list per step).

    Problems with the start string are raised here, before anything is generated."""
    start = start_text(loaded.vocab, cfg)
    if cfg.start and not start:  # --skip-unknown left nothing: say where it starts instead
        print(
            "charnn: warning: --skip-unknown dropped every char of --start; starting at a new line",
            file=sys.stderr,
        )
    return start, sample(
        loaded.model, loaded.vocab, cfg, weights_for(loaded, weights, cfg.num_samples), start
    )


def generate(
    model: str | Path | LoadedModel, start: str = "", length: int | None = None, **settings: object
) -> str | list[str]:
    """`start` plus `length` generated chars; a list of such strings when num_samples > 1.

    `settings`: SamplingConfig's (temperature, top_k, top_p, greedy, num_samples, seed, skip_unknown) and
    GenerateConfig's (device and verify where `model` is a path, weights)."""
    cfg, options = build_each({"start": start, "length": length, **settings}, SamplingConfig, GenerateConfig)
    loaded = load(model, options.device, options.verify)
    start, chars = stream(loaded, cfg, options.weights)
    parts: list[list[str]] = [[] for _ in range(cfg.num_samples)]
    for step in chars:
        for part, c in zip(parts, step, strict=True):
            part.append(c)
    texts = [start + "".join(p) for p in parts]
    return texts[0] if cfg.num_samples == 1 else texts


def evaluate(model: str | Path | LoadedModel, **settings: object) -> dict:
    """Loss over a whole split of the training text (or of `data`): state carried, and per 100-char window.

    `settings`: EvaluateConfig's (data, split, device, weights) and `verify` where `model` is a path."""
    cfg, options = build_each(settings, EvaluateConfig, GenerateConfig)  # device and weights: the former's
    loaded = load(model, cfg.device, options.verify)
    training = loaded.info.get("training", {})
    corpus = training_text(training, cfg.data, loaded.vocab, loaded.path)
    val_fraction = training.get("val_fraction", 0.1)
    train_ids, val_ids = split(corpus.ids, val_fraction)
    ids = {"val": val_ids, "train": train_ids, "all": corpus.ids}[cfg.split]
    if len(ids) < 2:
        other = "--split all" if cfg.split != "all" else "a longer text (--data)"
        held = f"the {cfg.split} split holds {len(ids)} char{'' if len(ids) == 1 else 's'}"
        raise DataError(f"{corpus.source}: {held}; nothing to evaluate (try {other})")
    net = loaded.model if cfg.weights == "fp32" else StepModel(loaded.model, cfg.weights)
    carried = loss_carried(net, ids)
    windows = loss_windows(net, ids, EVAL_WINDOW)
    if not math.isfinite(carried.nats) or not math.isfinite(windows.nats):
        raise ModelFileError(NOT_FINITE)
    return {
        "data": corpus.source,
        **({"skipped": list(corpus.skipped)} if corpus.skipped else {}),  # binary files left out
        "split": cfg.split,
        "val_fraction": val_fraction,
        "precision": cfg.weights,  # the weight format; the key keeps its first name for scripts reading it
        **carried.to_dict(),
        "carried": carried.to_dict(),
        "windows": {**windows.to_dict(), "window": EVAL_WINDOW},
    }
