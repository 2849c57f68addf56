"""The Python API behind the CLI: load a model, generate from it, evaluate it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from charnn.device import resolve_device
from charnn.errors import ConfigError, DataError
from charnn.evaluation import EVAL_WINDOW, loss_carried, loss_windows
from charnn.nn.stepper import WEIGHT_FORMATS, StepModel, choose_weights
from charnn.sampling import SamplingConfig, clean_start, sample, start_ids
from charnn.store.checkpoint import LoadedModel, load_model
from charnn.text.corpus import SHAKESPEARE, is_url, load_corpus, split

SPLITS = ("val", "train", "all")


def load(path: str | Path, device: str = "cpu", verify: bool = True) -> LoadedModel:
    """Load a run's best model or a model folder; `verify` checks the weights' sha256."""
    return load_model(path, resolve_device(device), verify)


def _loaded(model: str | Path | LoadedModel, device: str = "cpu") -> LoadedModel:
    return model if isinstance(model, LoadedModel) else load(model, device)


def describe(loaded: LoadedModel) -> dict:
    """What a model is and how it was trained, as `charnn info --json` and the server's /v1/model show it."""
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


def weights_for(loaded: LoadedModel, precision: str, batch: int) -> str:
    """The weight format generation runs with (see inference.choose_weights)."""
    checks = loaded.info.get("inference", {}).get("val_loss", {})
    return choose_weights(precision, checks if isinstance(checks, dict) else {}, batch, loaded.model.device)


def stream(
    loaded: LoadedModel, start: str, cfg: SamplingConfig, precision: str = "auto", skip_unknown: bool = False
) -> tuple[str, Iterator[list[str]]]:
    """The start string as it will be used, and an iterator over the generated chars (one list per step)."""
    start = clean_start(loaded.vocab, start, skip_unknown)
    start_ids(loaded.vocab, start)  # refuse unknown characters before anything is generated
    weights = weights_for(loaded, precision, cfg.num_samples)
    return start, sample(loaded.model, loaded.vocab, start, cfg, weights)


def generate(
    model: str | Path | LoadedModel,
    start: str = "",
    length: int = 1000,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    greedy: bool = False,
    num_samples: int = 1,
    seed: int | None = None,
    skip_unknown: bool = False,
    precision: str = "auto",
) -> str | list[str]:
    """Start string plus `length` generated chars; a list of such strings when num_samples > 1."""
    loaded = _loaded(model)
    cfg = SamplingConfig(length, temperature, top_k, top_p, greedy, num_samples, seed)
    start, chars = stream(loaded, start, cfg, precision, skip_unknown)
    parts: list[list[str]] = [[] for _ in range(num_samples)]
    for step in chars:
        for part, c in zip(parts, step, strict=True):
            part.append(c)
    texts = [start + "".join(p) for p in parts]
    return texts[0] if num_samples == 1 else texts


def evaluate(
    model: str | Path | LoadedModel,
    data: str | None = None,
    split_name: str = "val",
    device: str = "cpu",
    precision: str = "fp32",
) -> dict:
    """Loss over a whole split of the training text (or of `data`): state carried, and per 100-char window."""
    if split_name not in SPLITS:
        raise ConfigError(f"--split must be one of {', '.join(SPLITS)}, got {split_name!r}")
    loaded = _loaded(model, device)
    training = loaded.info.get("training", {})
    source = data or training.get("data")
    if not source:
        raise ConfigError(f"{loaded.path}: the model does not record its training text; pass --data")
    if not data and not (source == SHAKESPEARE or is_url(source) or Path(source).exists()):
        raise DataError(f"{source}: the model's training text is no longer there; pass --data PATH")
    corpus = load_corpus(source, training.get("encoding", "utf-8"), vocab=loaded.vocab)
    val_fraction = training.get("val_fraction", 0.1)
    train_ids, val_ids = split(corpus.ids, val_fraction)
    ids = {"val": val_ids, "train": train_ids, "all": corpus.ids}[split_name]
    if len(ids) < 2:
        raise DataError(
            f"{corpus.source}: the {split_name} split holds {len(ids)} chars; nothing to evaluate"
        )
    if precision not in WEIGHT_FORMATS:
        raise ConfigError(f"--precision must be one of {', '.join(WEIGHT_FORMATS)}, got {precision!r}")
    net = loaded.model if precision == "fp32" else StepModel(loaded.model, precision)
    carried = loss_carried(net, ids)
    windows = loss_windows(net, ids, EVAL_WINDOW)
    return {
        "data": corpus.source,
        "split": split_name,
        "val_fraction": val_fraction,
        "precision": precision,
        **carried.to_dict(),
        "carried": carried.to_dict(),
        "windows": {**windows.to_dict(), "window": EVAL_WINDOW},
    }
