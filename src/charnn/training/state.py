"""What a resume needs: the loop's progress, saved with the weights and optimizer as a checkpoint, read back
into a new process so that it continues bit for bit; and pruning old checkpoints."""

from __future__ import annotations

import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from charnn.config import OLD_LSTM_KERNELS, TrainConfig
from charnn.errors import ModelFileError
from charnn.nn.model import State
from charnn.store.checkpoint import Checkpoint, save_checkpoint
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


def save(
    run: RunDir,
    progress: Progress,
    step: TrainStep,
    cfg: TrainConfig,
    corpus_sha256: str,
    steps_per_epoch: int,
) -> Path:
    """Write checkpoints/step-N/ for the run's current state; returns its path."""
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
        "corpus_sha256": corpus_sha256,
        "lstm_kernel": step.lstm_kernel,
        "model": step.model.config.to_dict(),
        "train": asdict(cfg),
        "rng": rng.capture(),
        "grad_scaler": step.scaler_state(),
    }
    loop = {f"carry.{i}": s for i, s in enumerate(progress.carry)} if progress.carry else {}
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
        progress.step = int(state["step"])
        progress.train_time = float(state["train_time_s"])
        progress.planned_steps = int(state["planned_steps"])
        progress.best_val, progress.best_step = state["best_val_loss"], int(state["best_step"])
        progress.last_loss = state["last_loss"]
        carry = [ckpt.loop_tensors[f"carry.{i}"] for i in range(len(ckpt.loop_tensors))]
        progress.carry = tuple(t.to(step.device, step.dtype) for t in carry) if carry else None
        rng.restore(state["rng"])
        if step.lstm_kernel is None:  # the run keeps the kernel it started with
            kernel = state.get("lstm_kernel") or state.get("recurrent_kernel") or "pytorch"
            step.lstm_kernel = OLD_LSTM_KERNELS.get(kernel, kernel)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ModelFileError(
            f"{ckpt.path / 'state.json'}: damaged ({type(e).__name__}: {e}); "
            "delete this checkpoint folder to resume from the one before"
        ) from None


def prune(run: RunDir, keep: int, best_step: int) -> None:
    """Delete all but the `keep` newest checkpoints, never the one the best model came from."""
    found = run.checkpoints()
    kept = set(found[-keep:]) | {p for p in found if int(p.name[5:]) == best_step}
    for p in found:
        if p not in kept:
            shutil.rmtree(p, ignore_errors=True)
