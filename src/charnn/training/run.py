"""`charnn train`: settings, corpus and run folder put together, the loop run, and the weight formats checked.

Under torchrun every process runs this; rank 0 alone writes the run folder.
"""

from __future__ import annotations

import gc
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path

from charnn.config import ModelConfig, RunOptions, TrainConfig
from charnn.declare import build, settle
from charnn.device import cpu_kind, resolve_device
from charnn.errors import ConfigError, DataError
from charnn.evaluation import weight_checks
from charnn.presets import RESUMABLE, resume_settings, run_settings, settings_for, variant_note
from charnn.store.checkpoint import load_checkpoint
from charnn.store.model_dir import load_model, update_model_info
from charnn.store.rundir import RunDir
from charnn.text.corpus import canonical_source, load_corpus, warn_skipped
from charnn.training import distributed, init_from, rng, signals
from charnn.training.loop import Loop, TrainResult
from charnn.training.progress import Reporter

WEIGHT_CHECK_CHARS = 200_000  # enough to see a 0.01-nat change, quick even for big validation splits


def train(
    out: str | Path,
    *,
    preset: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    quiet: bool = False,
    clock: Callable[[], float] = time.perf_counter,
    **settings,
) -> TrainResult:
    """Train a model into run folder `out`; `settings` are ModelConfig and TrainConfig fields by name.

    `preset` defaults to seed for a new run; `resume` continues the run in `out` with its own preset and
    settings (only when to stop and how to report may change; a stop setting given replaces the saved
    ones); `overwrite` replaces a run there; `clock` gives the seconds time budgets are measured in.
    Python's, NumPy's and torch's global random generators, which the run seeds, are put back as they were.
    A signal that stops the run raises `Stopped` (a KeyboardInterrupt) once a checkpoint is saved."""
    given = {"out": out, "preset": preset, "resume": resume, "overwrite": overwrite, "quiet": quiet}
    opts = build(RunOptions, given)
    settle(opts)  # checked as the command line's flags are: overwrite="no" is refused, not taken as true
    if opts.out is None:
        raise ConfigError("--out must be given: the run folder to train into")
    caller = rng.capture()
    try:
        with signals.stop_at_once(partial(_stopped_outside_the_loop, RunDir(opts.out))):
            return _train(opts.out, opts.preset, opts.resume, opts.overwrite, opts.quiet, clock, settings)
    finally:
        rng.restore(caller)


def _stopped_outside_the_loop(run: RunDir, name: str) -> str:
    """What a stop signal during start-up or the final weight check says (the loop saves first)."""
    found = run.checkpoints()
    if not found:
        kept = "; the run it was to replace is kept as it was" if run.replacing() else ""
        return f"stopped by {name} before the first step: nothing was trained{kept}"
    return (
        f"stopped by {name}; the run is as its last checkpoint ({found[-1].name}) left it; "
        f"continue with: charnn train --out {run.path} --resume"
    )


def _train(
    out: str,
    preset: str | None,
    resume: bool,
    overwrite: bool,
    quiet: bool,
    clock: Callable[[], float],
    settings: dict,
) -> TrainResult:
    ranks = distributed.ranks_from_env()
    main = ranks.is_main
    run = RunDir(out)
    origin, kind = None, ""
    if resume:
        if settings.get("init_from") is not None:
            raise ConfigError(
                "--init-from starts a new run from a model; it cannot be combined with --resume"
            )
        saved = run.read_args()
        if settings.get("data") is not None:  # as given, the same file as the saved absolute path
            settings = {**settings, "data": canonical_source(settings["data"])}
        try:
            preset, model_settings, cfg = resume_settings(saved, settings, preset)
            origin = init_from.resumed(saved)
        except (KeyError, TypeError, ValueError) as e:
            raise run.args_damaged(e) from None
        if settings.get("data") is None and Path(cfg.data).is_absolute() and not Path(cfg.data).exists():
            raise DataError(
                f"{cfg.data}: the run's text is no longer there; resume with --data PATH where it is now"
            )
    else:
        preset = preset or "seed"
        plain = model_settings, cfg = settings_for(preset, settings)
        kind = cpu_kind() if cfg.init_from is None and resolve_device(cfg.device).type == "cpu" else ""
        if kind:  # a preset may take other settings on this kind of CPU, where they measured better
            model_settings, cfg = settings_for(preset, settings, kind=kind)
        if cfg.init_from is not None:
            model_settings, origin = init_from.start(cfg, model_settings, settings)
            if run.path.resolve() in (source := origin.loaded.path.resolve(), *source.parents):
                raise ConfigError(
                    f"--init-from {cfg.init_from} lies in --out {out}: the run would replace the model it "
                    "starts from; train into another folder"
                )
    cfg = replace(cfg, data=canonical_source(cfg.data))
    device = distributed.start(ranks, resolve_device(cfg.device), cfg.dist_timeout)
    reporter = Reporter(quiet or not main)
    try:
        if not resume and kind:
            if not _same_on_every_rank(kind, ranks):  # machines of several kinds: the preset's own settings
                kind = ""
                model_settings, cfg = plain[0], replace(plain[1], data=cfg.data)
            note = variant_note(preset, kind, settings)
            if note:
                reporter.line(note)
        if resume:  # rank 0 alone locks and tidies the folder
            distributed.together(ranks, lambda: main and run.prepare(resume=True, overwrite=False))
        corpus = distributed.together(  # a rank without the text: one line on every rank
            ranks,
            lambda: (
                init_from.corpus_for(origin, cfg, reporter.quiet)
                if origin
                else load_corpus(cfg.data, cfg.encoding, quiet=reporter.quiet)
            ),
        )
        model_cfg = ModelConfig(vocab_size=len(corpus.vocab), **model_settings)
        if not _same_on_every_rank(_learning(model_cfg, cfg, corpus.sha256), ranks):
            raise ConfigError(
                "the processes of this run were started with different settings or texts; "
                "start every process with the same command"
            )
        loop = Loop.create(run, model_cfg, cfg, corpus, preset, reporter, device, ranks, clock)
        if origin:
            loop.init_from = origin.record
        if origin and origin.loaded:
            init_from.copy_weights(origin, loop.train_step.model, corpus.vocab)
            loop.train_step.weights_changed()
        if resume:
            distributed.together(ranks, lambda: loop.restore(load_checkpoint(run.checkpoints()[-1])))
        else:
            distributed.together(ranks, lambda: main and run.prepare(resume=False, overwrite=overwrite))
        if main:
            warn_skipped(corpus.skipped)
            run.truncate_metrics(loop.step)
            run.write_args(run_settings(model_cfg, cfg, preset, corpus.skipped, loop.init_from))
        result = loop.run()
        val_ids = loop.val_ids
        # DistributedDataParallel's reducer holds the process group and sits in reference cycles: left to
        # the interpreter's exit, gloo's threads are torn down too late and the process aborts now and then.
        loop = None
        gc.collect()
        distributed.finish(ranks, clean=True)  # before the check rank 0 runs alone: no rank waits on it
        if main and result.stopped_by != "stopped":
            _check_weight_formats(run, val_ids, reporter)
    except BaseException:
        if main and run.locked:  # an overwritten run comes back where this one has no checkpoint
            run.settle_replaced()
        run.unlock()
        distributed.finish(ranks, clean=False)
        raise
    run.unlock()
    return result


_CPU_KINDS = ("", "fp32", "avx512_bf16", "amx")


def _same_on_every_rank(value: str, ranks: distributed.Ranks) -> bool:
    code = float(_CPU_KINDS.index(value)) if value in _CPU_KINDS else float(int(value[:13], 16))  # < 2**53
    return distributed.agree(code, ranks) == -distributed.agree(-code, ranks)


def _learning(model_cfg: ModelConfig, cfg: TrainConfig, text_sha256: str) -> str:
    """A hash of what decides what a run learns: its model, its settings but when to stop and how to
    report (and where the text lies: a path may differ between machines), and its text."""
    learnt = {k: v for k, v in asdict(cfg).items() if k not in RESUMABLE and k not in ("data", "device")}
    what = json.dumps([model_cfg.to_dict(), learnt, text_sha256], sort_keys=True, default=str)
    return hashlib.sha256(what.encode()).hexdigest()


def _check_weight_formats(run: RunDir, val_ids, reporter: Reporter) -> None:
    """Record in model/config.json how the best model's loss changes with reduced-precision weights."""
    ids = val_ids[:WEIGHT_CHECK_CHARS]
    if len(ids) < 2:
        return
    reporter.line(f"checking the best model with smaller weight formats on {len(ids) - 1:,} validation chars")
    checks = weight_checks(load_model(run.model_dir).model, ids)
    update_model_info(run.model_dir, "inference", {"val_chars": len(ids) - 1, "val_loss": checks})
