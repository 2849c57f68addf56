"""The training entry point (settings, corpus, run folder, then the loop) and the LR schedule."""

from __future__ import annotations

import gc
import math
from dataclasses import dataclass, replace
from pathlib import Path

from charnn.config import ModelConfig, TrainConfig, resolve_settings, resume_settings, settings_dict

COSINE_FLOOR = 0.1


@dataclass(frozen=True)
class TrainResult:
    """What a finished run reached."""

    run_dir: Path
    steps: int
    epochs: float
    chars_seen: int
    train_loss: float
    val_loss: float | None
    elapsed_s: float
    stopped_by: str


def lr_at(step: int, cfg: TrainConfig, total_steps: float) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warm-up, then constant or cosine to 10%."""
    if cfg.warmup and step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    if cfg.schedule == "constant":
        return cfg.lr
    span = max(total_steps - cfg.warmup, 1)
    progress = min(max(step - cfg.warmup, 0) / span, 1.0)
    return cfg.lr * (COSINE_FLOOR + (1 - COSINE_FLOOR) * 0.5 * (1 + math.cos(math.pi * progress)))


def train(
    out: str | Path,
    *,
    preset: str = "seed",
    resume: bool = False,
    overwrite: bool = False,
    quiet: bool = False,
    **settings,
) -> TrainResult:
    """Train a model into run folder `out`; `settings` are any ModelConfig/TrainConfig field names."""
    # Imported here so that `import charnn` stays light (torch loads on first use).
    from charnn.device import resolve_device
    from charnn.store.checkpoint import load_checkpoint
    from charnn.store.rundir import RunDir
    from charnn.text.corpus import canonical_source, load_corpus
    from charnn.training import distributed
    from charnn.training.loop import Trainer
    from charnn.training.progress import Reporter

    ranks = distributed.ranks_from_env()
    main = ranks.is_main
    run = RunDir(out)
    distributed.start(ranks, resolve_device(settings.get("device") or "auto"))
    try:
        if resume:  # every rank reads the run's settings; rank 0 alone locks and tidies the folder
            distributed.together(ranks, lambda: main and run.prepare(resume=True, overwrite=False))
            preset, model_settings, cfg = resume_settings(run.read_args(), settings)
        else:
            model_settings, cfg = resolve_settings(preset, settings)
        cfg = replace(cfg, data=canonical_source(cfg.data))
        corpus = load_corpus(cfg.data, cfg.encoding)
        model_cfg = ModelConfig(vocab_size=len(corpus.vocab), **model_settings)
        trainer = Trainer(run, model_cfg, cfg, corpus, preset, Reporter(quiet or not main), ranks)
        if resume:
            distributed.together(ranks, lambda: trainer.restore(load_checkpoint(run.checkpoints()[-1])))
        else:
            distributed.together(ranks, lambda: main and run.prepare(resume=False, overwrite=overwrite))
        if main:
            run.truncate_metrics(trainer.step)
            run.write_args(settings_dict(model_cfg, cfg, preset))
        result = trainer.run()
    except BaseException:
        run.unlock()
        distributed.finish(ranks, clean=False)
        raise
    # DistributedDataParallel's reducer holds the process group and sits in reference cycles: left to the
    # interpreter's exit, gloo's threads are torn down too late and the process aborts now and then.
    trainer = None
    gc.collect()
    run.unlock()
    distributed.finish(ranks, clean=True)
    return result
