"""The training loop: steps, validation, the best model, checkpoints, resume and clean stops."""

from __future__ import annotations

import datetime
import math
import os
import random
import shutil
import signal
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from charnn.config import ModelConfig, TrainConfig
from charnn.device import resolve_device, resolve_precision
from charnn.errors import CharnnError, ConfigError, DataError, ModelFileError, TrainingError
from charnn.evaluation import LossReport, loss_carried
from charnn.nn import cpu_lstm
from charnn.nn.model import CharRNN, check_fits_in_memory
from charnn.nn.stepper import weight_checks
from charnn.store.checkpoint import (
    Checkpoint,
    load_model,
    load_weights,
    save_checkpoint,
    save_model,
    update_model_info,
)
from charnn.store.rundir import RunDir
from charnn.text.corpus import Corpus, RandomBatches, StreamBatches, WindowBatches, split
from charnn.training import distributed, rng
from charnn.training.distributed import Ranks
from charnn.training.mixed_precision import LowPrecisionCopy
from charnn.training.plot import matplotlib_available, plot_losses
from charnn.training.progress import Reporter
from charnn.training.run import TrainResult, lr_at
from charnn.training.signals import StopSignals

_THROUGHPUT_PROBE_STEPS = 10
_KERNEL_MARGIN = 1.05  # charnn's CPU LSTM layer is used only where measured this much faster (timing noise)
WEIGHT_CHECK_CHARS = 200_000  # enough to see a 0.01-nat change, quick even for big validation splits


class Stopped(CharnnError):
    """Training was stopped by a signal after saving a checkpoint."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class Trainer:
    """Owns the model, optimizer, batches and loop state of one run."""

    def __init__(
        self,
        run: RunDir,
        model_cfg: ModelConfig,
        cfg: TrainConfig,
        corpus: Corpus,
        preset: str,
        reporter: Reporter,
        ranks: Ranks | None = None,
    ):
        self.rundir, self.cfg, self.corpus, self.preset, self.reporter = run, cfg, corpus, preset, reporter
        self.ranks = ranks = ranks or Ranks()
        self.rows = ranks.rows(cfg.batch_size)  # this process's share of each global batch
        self.device = distributed.start(ranks, resolve_device(cfg.device))
        self.dtype = resolve_precision(cfg.precision, self.device)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        check_fits_in_memory(model_cfg)
        self.model = CharRNN(model_cfg).to(self.device)
        # On CPU, autocast does not reach the fused LSTM kernel, so low precision runs on a cast copy
        # of the weights while the optimizer keeps updating the fp32 originals.
        cast = self.device.type == "cpu" and self.dtype != torch.float32
        self.cast = LowPrecisionCopy(self.model, self.dtype) if cast else None
        self.compute = self.cast.module if self.cast else self.model
        # bf16 LSTM training on CPU has two kernels; which is faster depends on the sizes and the CPU, so
        # the run times both before its first step (None until then; a resumed run keeps its choice).
        self.recurrent_kernel: str | None = None if self.cast and model_cfg.cell == "lstm" else "fused"
        self.forced_kernel = os.environ.get("CHARNN_LSTM_KERNEL", "auto")
        if self.forced_kernel not in ("auto", "charnn", "fused"):
            raise ConfigError(f"CHARNN_LSTM_KERNEL must be auto, charnn or fused, got {self.forced_kernel!r}")
        self.parallel = distributed.wrap(self.compute, ranks, self.device)
        self.autocast = self.device.type == "cuda" and self.dtype != torch.float32
        self.scaler = torch.amp.GradScaler("cuda") if self.dtype == torch.float16 else None
        optim_cls = torch.optim.AdamW if cfg.weight_decay else torch.optim.Adam
        self.optimizer = optim_cls(
            self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True
        )
        train_ids, self.val_ids = split(corpus.ids, cfg.val_fraction)
        batches = {"windows": WindowBatches, "stream": StreamBatches, "random": RandomBatches}[cfg.batching]
        self.batches = batches(train_ids, cfg.seq_len, cfg.batch_size, cfg.seed, corpus.source)
        if cfg.val_fraction > 0 and len(self.val_ids) < cfg.seq_len + 1:
            raise DataError(
                f"{corpus.source}: the validation split holds {len(self.val_ids)} chars, fewer than one "
                f"window of {cfg.seq_len + 1}; raise --val-fraction, use more text, or --val-fraction 0"
            )
        self.steps_per_epoch = self.batches.steps_per_epoch
        limits = [cfg.max_steps, cfg.epoch_limit and cfg.epoch_limit * self.steps_per_epoch]
        self.step_limit: int | None = min((x for x in limits if x), default=None)
        self.planned_steps = self.step_limit or 0
        self.step = 0
        self.train_time = 0.0
        self.best_val: float | None = None
        self.best_step = 0
        self.last_val: LossReport | None = None
        self.last_loss = math.nan
        self.carry: tuple[torch.Tensor, ...] | None = None
        self.has_model = False  # model/ written by this run; the same answer on every rank
        self._plot_note_shown = False

    # ---- one step -------------------------------------------------------------------------------------
    def _train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        lr = lr_at(self.step, self.cfg, self.planned_steps or math.inf)  # unknown yet: no decay
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x, y = (
            x[self.rows].to(self.device, non_blocking=True),
            y[self.rows].to(self.device, non_blocking=True),
        )
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.autocast):
            logits, state = self.parallel(x, self.carry)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))
        if self.batches.carries_state:
            self.carry = tuple(s.detach() for s in state)
        (self.scaler.scale(loss) if self.scaler else loss).backward()
        if self.cast:
            self.cast.grads_to_master()
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        max_norm = self.cfg.clip if self.cfg.clip > 0 else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm))
        value = loss.item()
        # Gradients are averaged over ranks, so a NaN anywhere shows in grad_norm everywhere: all stop
        # together. (With fp16's gradient scaler, infinite gradients only skip a step.)
        if not math.isfinite(value) or (not self.scaler and not math.isfinite(grad_norm)):
            value = value if not math.isfinite(value) else grad_norm
            raise TrainingError(
                f"the loss became {value} at step {self.step + 1}; the last good checkpoint is kept. "
                "Lower --lr, set --clip 1.0, or use --precision fp32"
            )
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.cast:
            self.cast.weights_from_master()
        else:
            self.optimizer.zero_grad(set_to_none=True)
        return value, grad_norm

    # ---- evaluation, saving -------------------------------------------------------------------------
    def evaluate(self) -> LossReport | None:
        """Exact validation loss of the fp32 weights over the whole validation split."""
        if not len(self.val_ids):
            return None
        self.compute.rnn.cpu_layer_buffers.clear()  # training's work buffers: the next step makes them again
        shard = (self.ranks.rank, self.ranks.world)
        reduce = lambda values: distributed.sum_all(values, self.ranks)  # noqa: E731
        report = loss_carried(self.model, self.val_ids, shard=shard, reduce=reduce)
        self.model.train()
        return report

    @property
    def chars_seen(self) -> int:
        return self.step * self.cfg.batch_size * self.cfg.seq_len

    def training_summary(self) -> dict:
        """The `training` section of model/config.json."""
        return {
            "preset": self.preset,
            "data": self.corpus.source,
            "data_sha256": self.corpus.sha256,
            "encoding": self.cfg.encoding,
            "val_fraction": self.cfg.val_fraction,
            "seq_len": self.cfg.seq_len,
            "steps": self.step,
            "epochs": round(self.step / self.steps_per_epoch, 3),
            "chars_seen": self.chars_seen,
            "train_loss": self.last_loss,
            "val_loss": self.last_val.nats if self.last_val else None,
            "val_bits_per_char": self.last_val.bits if self.last_val else None,
            "train_time_s": round(self.train_time, 2),
            "device": str(self.device),
            "precision": str(self.dtype).removeprefix("torch."),
            "recurrent_kernel": self.recurrent_kernel,
            "torch": torch.__version__,
            "saved_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }

    def _after_eval(self, report: LossReport | None) -> None:
        self.last_val = report
        if report is None or self.best_val is None or report.nats < self.best_val:
            self.best_val = report.nats if report else None
            self.best_step = self.step
            self.has_model = True
            if self.ranks.is_main:
                save_model(self.rundir.model_dir, self.model, self.corpus.vocab, self.training_summary())
        if report is not None and self.ranks.is_main:
            self.rundir.append_metrics(
                {
                    "step": self.step,
                    "epoch": self.step / self.steps_per_epoch,
                    "chars": self.chars_seen,
                    "val_loss": report.nats,
                    "val_bits_per_char": report.bits,
                    "train_time_s": self.train_time,
                }
            )
            self._plot()

    def _plot(self) -> None:
        if not matplotlib_available():
            if not self._plot_note_shown:
                self.reporter.line("note: loss.png not drawn; install matplotlib (pip install matplotlib)")
                self._plot_note_shown = True
            return
        plot_losses(self.rundir.read_metrics(), self.rundir.plot_path)

    def save_checkpoint(self) -> Path | None:
        """Write a checkpoint (rank 0 only; every rank must call this, as it may evaluate)."""
        if not self.has_model:  # a run stopped before its first evaluation still gets a model
            self._after_eval(self.evaluate())
        if not self.ranks.is_main:
            return None
        state = {
            "epoch": self.step // self.steps_per_epoch,
            "batch_in_epoch": self.step % self.steps_per_epoch,
            "chars_seen": self.chars_seen,
            "train_time_s": self.train_time,
            "planned_steps": self.planned_steps,
            "best_val_loss": self.best_val,
            "best_step": self.best_step,
            "last_loss": self.last_loss,
            "corpus_sha256": self.corpus.sha256,
            "recurrent_kernel": self.recurrent_kernel,
            "model": self.model.config.to_dict(),
            "train": asdict(self.cfg),
            "rng": rng.capture(),
        }
        loop = {f"carry.{i}": s for i, s in enumerate(self.carry)} if self.carry else {}
        path = save_checkpoint(self.rundir.path, self.step, self.model, self.optimizer, state, loop)
        self._prune_checkpoints()
        return path

    def _prune_checkpoints(self) -> None:
        found = self.rundir.checkpoints()
        keep = {p for p in found[-self.cfg.keep :]}
        keep |= {p for p in found if int(p.name[5:]) == self.best_step}
        for p in found:
            if p not in keep:
                shutil.rmtree(p, ignore_errors=True)

    def restore(self, ckpt: Checkpoint) -> None:
        """Continue exactly where checkpoint `ckpt` left off."""
        state = ckpt.state
        if state.get("corpus_sha256") != self.corpus.sha256:
            raise ModelFileError(
                f"{ckpt.path}: was trained on a different text than {self.corpus.source} (sha256 differs); "
                "resume with the same --data or start a new run"
            )
        if state.get("model") != self.model.config.to_dict():
            raise ModelFileError(f"{ckpt.path}: the model settings differ from this run's; start a new run")
        load_weights(self.model, ckpt.weights, ckpt.path / "model.safetensors")
        self.has_model = True
        if self.cast:
            self.cast.weights_from_master()
        try:
            self.optimizer.load_state_dict(ckpt.optimizer)
            self.step = int(state["step"])
            self.train_time = float(state["train_time_s"])
            self.planned_steps = self.step_limit or int(state["planned_steps"])
            self.best_val, self.best_step = state["best_val_loss"], int(state["best_step"])
            self.last_loss = state["last_loss"]
            carry = [ckpt.loop_tensors[f"carry.{i}"] for i in range(len(ckpt.loop_tensors))]
            self.carry = tuple(t.to(self.device, self.dtype) for t in carry) if carry else None
            rng.restore(state["rng"])
            if self.recurrent_kernel is None:  # checkpoints from before the choice existed used the fused one
                self.recurrent_kernel = state.get("recurrent_kernel", "fused")
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise ModelFileError(
                f"{ckpt.path / 'state.json'}: damaged ({type(e).__name__}: {e}); "
                "delete this checkpoint folder to resume from the one before"
            ) from None

    def choose_recurrent_kernel(self) -> None:
        """Time charnn's CPU LSTM layer against PyTorch's fused kernel at this run's sizes (once per run,
        about two seconds for the tutorial's model) and compute with the faster from now on.
        CHARNN_LSTM_KERNEL=charnn|fused picks one without timing."""
        if self.recurrent_kernel is None and self.forced_kernel != "auto":
            self.recurrent_kernel = self.forced_kernel
        if self.recurrent_kernel is None:
            c, rows = self.model.config, len(range(self.cfg.batch_size)[self.rows])
            speedup = cpu_lstm.speedup_over_fused(c.embedding, c.hidden, c.layers, rows, self.cfg.seq_len)
            faster = distributed.agree(float(speedup >= _KERNEL_MARGIN), self.ranks)  # the same on all ranks
            self.recurrent_kernel = "charnn" if faster else "fused"
            chosen = "charnn's layer" if faster else "the fused kernel"
            self.reporter.line(
                f"bf16 LSTM on CPU: charnn's layer runs at {speedup:.2f}x the speed of PyTorch's fused "
                f"kernel at these sizes; training with {chosen}"
            )
        self.compute.rnn.use_cpu_layer = self.recurrent_kernel == "charnn"

    # ---- the loop -------------------------------------------------------------------------------------
    def _stop_reason(self) -> str | None:
        if self.step_limit is not None and self.step >= self.step_limit:
            return "done"
        over_budget = self.cfg.time_budget is not None and self.train_time >= self.cfg.time_budget
        if distributed.agree(float(over_budget), self.ranks):  # ranks time themselves; stop together
            return "time budget"
        return None

    def _agreed_signal(self, signals: StopSignals) -> str | None:
        """The stop signal any rank received (the same answer on every rank)."""
        received = distributed.agree(float(signals.received or 0), self.ranks)
        return signal.Signals(int(received)).name if received else None

    def _plan_for_budget(self) -> None:
        """Size the schedule to the time budget from the throughput measured so far."""
        if self.cfg.time_budget is None or self.step < _THROUGHPUT_PROBE_STEPS:
            return
        estimate = int(self.cfg.time_budget * self.step / max(self.train_time, 1e-9))
        estimate = int(distributed.agree(estimate, self.ranks))  # one schedule for all ranks
        self.planned_steps = min(estimate, self.step_limit) if self.step_limit else estimate
        self.reporter.set_total(self.planned_steps)

    def run(self) -> TrainResult:
        signals = StopSignals()
        with signals.installed():
            return self._loop(signals)

    def _loop(self, signals: StopSignals) -> TrainResult:
        cfg, spe = self.cfg, self.steps_per_epoch
        self.model.train()
        self.compute.train()
        self.choose_recurrent_kernel()
        self.reporter.start(self.step_limit or 0, self.step)
        window_losses: list[float] = []
        window_time, epoch_start, epoch_losses = 0.0, time.perf_counter(), []
        evaluated_at = saved_at = self.step
        reason = self._stop_reason()
        try:
            while reason is None:
                epoch, index = divmod(self.step, spe)
                if index == 0:
                    self.carry = None
                    epoch_start, epoch_losses = time.perf_counter(), []
                x, y = self.batches.batch(epoch, index)
                t0 = time.perf_counter()
                try:
                    loss, grad_norm = self._train_step(x, y)
                except RuntimeError as e:  # gradients are averaged in a collective: a dead rank shows here
                    if distributed.is_peer_failure(e, self.ranks):
                        raise distributed.peer_failure(e) from None
                    raise
                step_time = time.perf_counter() - t0
                self.train_time += step_time
                window_time += step_time
                self.step += 1
                self.last_loss = loss
                window_losses.append(loss)
                epoch_losses.append(loss)
                if (
                    self.step in (_THROUGHPUT_PROBE_STEPS, _THROUGHPUT_PROBE_STEPS * 10)
                    or self.step % 500 == 0
                ):
                    self._plan_for_budget()
                chars_per_s = len(window_losses) * cfg.batch_size * cfg.seq_len / window_time
                self.reporter.update(self.step, loss, chars_per_s)
                if self.step % cfg.log_every == 0:
                    self._log(epoch, window_losses, grad_norm, chars_per_s)
                    window_losses, window_time = [], 0.0
                end_of_epoch = self.step % spe == 0
                reason = self._stop_reason()
                if end_of_epoch or (cfg.eval_every and self.step % cfg.eval_every == 0) or reason:
                    self._after_eval(self.evaluate())
                    evaluated_at = self.step
                if end_of_epoch:
                    self.reporter.epoch_end(
                        epoch, epoch_losses, self.last_val, time.perf_counter() - epoch_start
                    )
                if end_of_epoch or (cfg.save_every and self.step % cfg.save_every == 0) or reason:
                    self.save_checkpoint()
                    saved_at = self.step
                if reason is None:
                    reason = self._agreed_signal(signals)
        except KeyboardInterrupt:
            reason = "SIGINT"
        finally:
            self.reporter.close()
        if reason in ("SIGINT", "SIGTERM"):
            return self._stopped_by_signal(reason, saved_at)
        if evaluated_at != self.step or not self.has_model:
            self._after_eval(self.evaluate())
        if saved_at != self.step:
            self.save_checkpoint()
        self._check_weight_formats()
        return self._result(reason or "done")

    def _check_weight_formats(self) -> None:
        """Record in model/config.json how the best model's loss changes with reduced-precision weights."""
        ids = self.val_ids[:WEIGHT_CHECK_CHARS]
        if len(ids) < 2 or not self.ranks.is_main:
            return
        checks = weight_checks(load_model(self.rundir.model_dir).model, ids)
        update_model_info(self.rundir.model_dir, "inference", {"val_chars": len(ids) - 1, "val_loss": checks})

    def _stopped_by_signal(self, name: str, saved_at: int) -> TrainResult:
        path = self.save_checkpoint() if saved_at != self.step else None
        if path is None and self.ranks.is_main:
            path = self.rundir.checkpoints()[-1]
        code = 130 if name == "SIGINT" else 143
        saved = f"checkpoint saved to {path}" if path else "rank 0 saved a checkpoint"
        raise Stopped(
            f"stopped by {name} at step {self.step}; {saved}; "
            f"continue with: charnn train --out {self.rundir.path} --resume",
            code,
        )

    def _log(self, epoch: int, losses: list[float], grad_norm: float, chars_per_s: float) -> None:
        mean = sum(losses) / len(losses)
        lr = self.optimizer.param_groups[0]["lr"]
        self.reporter.line(
            f"Epoch {epoch + 1} Step {self.step} Loss {mean:.4f}  lr {lr:.2e}  {chars_per_s:,.0f} chars/s"
        )
        if not self.ranks.is_main:
            return
        self.rundir.append_metrics(
            {
                "step": self.step,
                "epoch": self.step / self.steps_per_epoch,
                "chars": self.chars_seen,
                "loss": mean,
                "lr": lr,
                "grad_norm": grad_norm,
                "chars_per_s": chars_per_s,
                "train_time_s": self.train_time,
            }
        )

    def _result(self, reason: str) -> TrainResult:
        return TrainResult(
            run_dir=self.rundir.path,
            steps=self.step,
            epochs=self.step / self.steps_per_epoch,
            chars_seen=self.chars_seen,
            train_loss=self.last_loss,
            val_loss=self.best_val,
            elapsed_s=self.train_time,
            stopped_by=reason,
        )
