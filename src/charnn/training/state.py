"""What a resume needs: the loop's progress, saved with the weights and optimizer as a checkpoint, read back
into a new process so that it continues bit for bit; and pruning old checkpoints."""

from __future__ import annotations

import math
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from charnn.config import OLD_LSTM_KERNELS, TrainConfig
from charnn.errors import ModelFileError
from charnn.nn.model import State
from charnn.store.checkpoint import RESUME_BEFORE, Checkpoint, save_checkpoint
from charnn.store.model_dir import load_weights
from charnn.store.rundir import RunDir
from charnn.training import rng
from charnn.training.curriculum import chars_before
from charnn.training.step import TrainStep


@dataclass
class Progress:
    """Where a run stands, besides its weights and optimizer state."""

    step: int = 0
    train_time: float = 0.0  # seconds spent in training steps
    planned_steps: int = 0  # the schedule's length (0: not known yet)
    best_val: float | None = None
    best_step: int = 0
    last_loss: float = math.nan
    carry: State | None = None  # the recurrent state carried between batches (stream batching)
    window_losses: list[float] = field(default_factory=list)  # since the last log line
    window_time: float = 0.0
    epoch_losses: list[float] = field(default_factory=list)  # of the epoch under way


def save(
    run: RunDir,
    progress: Progress,
    carry: State | None,
    step: TrainStep,
    cfg: TrainConfig,
    corpus_sha256: str,
    steps_per_epoch: int,
) -> Path:
    """Write checkpoints/step-N/ for the run's current state, `carry` the state carried on for every
    stream of the global batch; returns its path."""
    n = progress.step
    state = {
        "epoch": n // steps_per_epoch,
        "batch_in_epoch": n % steps_per_epoch,
        "chars_seen": chars_before(n, cfg) * cfg.batch_size,
        "train_time_s": progress.train_time,
        "planned_steps": progress.planned_steps,
        "best_val_loss": progress.best_val,
        "best_step": progress.best_step,
        "last_loss": progress.last_loss,
        "log_window": {"losses": progress.window_losses, "seconds": progress.window_time},
        "epoch_losses": progress.epoch_losses,
        "corpus_sha256": corpus_sha256,
        "lstm_kernel": step.lstm_kernel,
        "model": step.model.config.to_dict(),
        "train": asdict(cfg),
        "rng": rng.capture(),
        "grad_scaler": step.scaler_state(),
    }
    loop = {f"carry.{i}": s for i, s in enumerate(carry)} if carry else {}
    return save_checkpoint(run.path, n, step.model, step.optimizer, state, loop)


def restore(ckpt: Checkpoint, progress: Progress, step: TrainStep, corpus_sha256: str, source: str) -> None:
    """Put the run back where checkpoint `ckpt` left it: weights, optimizer, progress and random states."""
    state = ckpt.state
    if state.get("corpus_sha256") != corpus_sha256:
        raise ModelFileError(
            f"{ckpt.path}: was trained on a different text than {source} (sha256 differs); "
            "resume with the same --data or start a new run"
        )
    if state.get("model") != step.model.config.to_dict():
        raise ModelFileError(f"{ckpt.path}: the model settings differ from this run's; start a new run")
    load_weights(step.model, ckpt.weights, ckpt.path / "model.safetensors")
    step.weights_changed()
    try:
        step.optimizer.load_state_dict(ckpt.optimizer)
        step.load_scaler_state(state.get("grad_scaler"))
        progress.step = _count(state["step"])
        if progress.step != int(ckpt.path.name.removeprefix("step-")):
            raise ValueError(f"step {progress.step} in the folder of step {ckpt.path.name}")
        progress.train_time = float(state["train_time_s"])
        progress.planned_steps = _count(state["planned_steps"])
        best = state["best_val_loss"]
        progress.best_val, progress.best_step = (
            None if best is None else float(best),
            _count(state["best_step"]),
        )
        progress.last_loss = float(state["last_loss"])
        window = state.get("log_window", {"losses": [], "seconds": 0.0})  # not in checkpoints before these
        progress.window_losses = [float(x) for x in window["losses"]]
        progress.window_time = float(window["seconds"])
        progress.epoch_losses = [float(x) for x in state.get("epoch_losses", [])]
        carry = [ckpt.loop_tensors[f"carry.{i}"] for i in range(len(ckpt.loop_tensors))]
        c = step.model.config
        for t in carry:  # every stream's, this process takes its own (any number of processes)
            if tuple(t.shape) != (c.layers, step.cfg.batch_size, c.hidden):
                raise ValueError(
                    f"a carried state of shape {tuple(t.shape)} for {step.cfg.batch_size} streams"
                )
        progress.carry = (
            tuple(t[:, step.rows].to(step.device, step.dtype).contiguous() for t in carry) or None
        )
        rng.restore(state["rng"])
        if step.lstm_kernel is None:  # the run keeps the kernel it started with
            kernel = state.get("lstm_kernel") or state.get("recurrent_kernel") or "pytorch"
            step.lstm_kernel = OLD_LSTM_KERNELS.get(kernel, kernel)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ModelFileError(
            f"{ckpt.path / 'state.json'}: damaged ({type(e).__name__}: {e}); {RESUME_BEFORE}"
        ) from None


def _count(value: object) -> int:
    """A step count as saved: a whole number, not below zero."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{value!r} is not a step count")
    return value


def prune(run: RunDir, keep: int, best_step: int) -> None:
    """Delete all but the `keep` newest checkpoints, never the one the best model came from."""
    found = run.checkpoints()
    kept = set(found[-keep:]) | {p for p in found if int(p.name[5:]) == best_step}
    for p in found:
        if p not in kept:
            shutil.rmtree(p, ignore_errors=True)
