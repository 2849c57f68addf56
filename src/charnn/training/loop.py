"""The training loop: steps in order, the tutorial's log lines, validation, the best model, checkpoints, and
stopping at a step limit, a time budget or a signal."""

from __future__ import annotations

import datetime
import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from charnn.config import ModelConfig, TrainConfig
from charnn.device import CoreWait
from charnn.errors import DataError, Stopped, TrainingError
from charnn.evaluation import LossReport, loss_carried
from charnn.store.checkpoint import Checkpoint
from charnn.store.model_dir import save_model
from charnn.store.rundir import RunDir
from charnn.text.batches import make_batches
from charnn.text.corpus import Corpus, split
from charnn.training import distributed, state
from charnn.training.copy_probe import CopyProbe
from charnn.training.curriculum import chars_before, sampling_prob, seq_len_at
from charnn.training.plot import matplotlib_available, plot_losses
from charnn.training.progress import Reporter
from charnn.training.schedule import lr_at
from charnn.training.signals import STOP_NAMES, StopSignals
from charnn.training.step import NonFiniteLoss, TrainStep

PROBE_STEPS = 10  # a time budget's schedule is sized from the speed of the first steps (and again later)


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
    steps_now: int = 0  # of `steps`, those this call trained (the rest before a --resume)


class Loop:
    """One run's loop over a TrainStep and its batches; rank 0 writes the run folder."""

    def __init__(
        self,
        run: RunDir,
        step: TrainStep,
        corpus: Corpus,
        preset: str,
        reporter: Reporter,
        clock: Callable[[], float] = time.perf_counter,
    ):
        """`clock` gives the seconds that time budgets and speeds are measured in."""
        self.rundir, self.train_step, self.corpus, self.preset = run, step, corpus, preset
        self.reporter, self.clock = reporter, clock
        self.cfg = cfg = step.cfg
        self.ranks = step.ranks
        train_ids, self.val_ids = split(corpus.ids, cfg.val_fraction)
        self.batches = make_batches(
            cfg.batching, train_ids, cfg.seq_len, cfg.batch_size, cfg.seed, corpus.source
        )
        if cfg.val_fraction > 0 and len(self.val_ids) < cfg.seq_len + 1:
            raise DataError(
                f"{corpus.source}: the validation split holds {len(self.val_ids)} chars, fewer than one "
                f"window of {cfg.seq_len + 1}; raise --val-fraction, use more text, or --val-fraction 0"
            )
        self.steps_per_epoch = self.batches.steps_per_epoch
        limits = [cfg.max_steps, cfg.epoch_limit and cfg.epoch_limit * self.steps_per_epoch]
        self.step_limit: int | None = min((x for x in limits if x), default=None)
        self.progress = state.Progress(planned_steps=self.step_limit or 0)
        self.last_val: LossReport | None = None
        self.copy_probe = CopyProbe(corpus, train_ids, cfg.seed)
        self.has_model = False  # model/ written by this run; the same answer on every rank
        self._plot_note_shown = False
        self._core_wait = CoreWait()  # how long the steps wait for a core, per log interval
        self.init_from: dict | None = None  # the model a --init-from run started from, as recorded

    @classmethod
    def create(
        cls,
        run: RunDir,
        model_cfg: ModelConfig,
        cfg: TrainConfig,
        corpus: Corpus,
        preset: str,
        reporter: Reporter,
        device: torch.device | None = None,
        ranks: distributed.Ranks | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> Loop:
        """A new run's loop: the model seeded from cfg.seed on `device` (default: the CPU)."""
        step = TrainStep(model_cfg, cfg, device or torch.device("cpu"), ranks)
        return cls(run, step, corpus, preset, reporter, clock)

    @property
    def step(self) -> int:
        return self.progress.step

    @property
    def chars_seen(self) -> int:
        return chars_before(self.step, self.cfg) * self.cfg.batch_size

    def restore(self, ckpt: Checkpoint) -> None:
        """Continue exactly where checkpoint `ckpt` left off."""
        p = self.progress
        state.restore(ckpt, p, self.train_step, self.corpus.sha256, self.corpus.source)
        if self.cfg.time_budget is None or not p.planned_steps:  # else the saved estimate, as if not stopped
            p.planned_steps = self.step_limit or p.planned_steps
        elif self.step_limit:
            p.planned_steps = min(p.planned_steps, self.step_limit)
        self.has_model = True

    # ---- validation and saving ------------------------------------------------------------------------
    def evaluate(self) -> LossReport | None:
        """Exact validation loss of the fp32 weights over the whole validation split (None without one)."""
        if not len(self.val_ids):
            return None
        self.train_step.release_buffers()
        shard = (self.ranks.rank, self.ranks.world)
        reduce = lambda values: distributed.sum_all(values, self.ranks)  # noqa: E731
        report = loss_carried(self.train_step.model, self.val_ids, shard=shard, reduce=reduce)
        self.train_step.model.train()
        return report

    def training_summary(self) -> dict:
        """The `training` section of model/config.json."""
        p, cfg = self.progress, self.cfg
        return {
            "preset": self.preset,
            "data": self.corpus.source,
            "data_sha256": self.corpus.sha256,
            "encoding": cfg.encoding,
            "val_fraction": cfg.val_fraction,
            "seq_len": cfg.seq_len,
            "steps": p.step,
            "epochs": round(p.step / self.steps_per_epoch, 3),
            "chars_seen": self.chars_seen,
            "train_loss": p.last_loss,
            "val_loss": self.last_val.nats if self.last_val else None,
            "val_bits_per_char": self.last_val.bits if self.last_val else None,
            "train_time_s": round(p.train_time, 2),
            "device": str(self.train_step.device),
            "precision": str(self.train_step.dtype).removeprefix("torch."),
            "lstm_kernel": self.train_step.lstm_kernel,
            "torch": torch.__version__,
            "saved_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        } | ({"init_from": self.init_from} if self.init_from else {})

    def _after_eval(self, report: LossReport | None) -> None:
        p = self.progress
        self.last_val = report
        if report is None or p.best_val is None or report.nats < p.best_val:
            p.best_val, p.best_step = (report.nats if report else None), p.step
            self.has_model = True
            if self.ranks.is_main:
                model = self.train_step.model
                save_model(self.rundir.model_dir, model, self.corpus.vocab, self.training_summary())
        if report is not None and self.ranks.is_main:
            copying = self.copy_probe.measure(self.train_step.model)
            self._record(val_loss=report.nats, val_bits_per_char=report.bits, **copying)
            self._plot()

    def _record(self, **values: float) -> None:
        """One line of metrics.jsonl."""
        epoch = self.step / self.steps_per_epoch
        line = {"step": self.step, "epoch": epoch, "chars": self.chars_seen, **values}
        self.rundir.append_metrics({**line, "train_time_s": self.progress.train_time})

    def _plot(self) -> None:
        if matplotlib_available():
            plot_losses(self.rundir.read_metrics(), self.rundir.plot_path)
        elif not self._plot_note_shown:
            self.reporter.line("note: loss.png not drawn; install matplotlib (pip install matplotlib)")
            self._plot_note_shown = True

    def save_checkpoint(self) -> Path | None:
        """Write a checkpoint (rank 0 only; every rank must call this, as it may evaluate)."""
        if not self.has_model:  # a run stopped before its first evaluation still gets a model, not a best:
            self.has_model = True  # the first evaluation replaces it, as in a run not stopped here
            if self.ranks.is_main:
                model = self.train_step.model
                save_model(self.rundir.model_dir, model, self.corpus.vocab, self.training_summary())
        p = self.progress
        carry = p.carry and tuple(distributed.gather_rows(s, self.ranks) for s in p.carry)  # every stream
        if not self.ranks.is_main:
            return None
        path = state.save(
            self.rundir, p, carry, self.train_step, self.cfg, self.corpus.sha256, self.steps_per_epoch
        )
        state.prune(self.rundir, self.cfg.keep, self.progress.best_step)
        self.rundir.settle_replaced()  # a run this one overwrote goes now that this one has a checkpoint
        return path

    # ---- the loop -------------------------------------------------------------------------------------
    def _stop_reason(self) -> str | None:
        if self.step_limit is not None and self.step >= self.step_limit:
            return "done"
        budget = self.cfg.time_budget
        over_budget = budget is not None and self.progress.train_time >= budget
        if distributed.agree(float(over_budget), self.ranks):  # ranks time themselves; stop together
            return "time budget"
        return None

    def _agreed_signal(self, signals: StopSignals) -> str | None:
        """The stop signal any rank received (the same answer on every rank)."""
        received = distributed.agree(float(signals.received or 0), self.ranks)
        return signal.Signals(int(received)).name if received else None

    def _plan_for_budget(self) -> None:
        """Size the schedule to the time budget from the throughput measured so far."""
        p = self.progress
        if self.cfg.time_budget is None or p.step < PROBE_STEPS:
            return
        estimate = int(self.cfg.time_budget * p.step / max(p.train_time, 1e-9))
        estimate = int(distributed.agree(estimate, self.ranks))  # one schedule for all ranks
        p.planned_steps = min(estimate, self.step_limit) if self.step_limit else estimate
        self.reporter.set_total(p.planned_steps)

    def run(self) -> TrainResult:
        """Train until the step limit, the time budget or a stop signal; evaluate and save at the end."""
        signals = StopSignals()
        first = self.progress.step
        with signals.installed():
            result = self._loop(signals)
        return replace(result, steps_now=result.steps - first)

    def _one_step(self, epoch: int, index: int) -> tuple[float, float, float]:
        """Train on batch `index` of `epoch`: (loss, gradient norm, seconds)."""
        p = self.progress
        x, y = self.batches.batch(epoch, index)
        cut = seq_len_at(p.step, self.cfg)
        if cut < self.cfg.seq_len:  # a shorter window, not carried on from (docs in curriculum.py)
            x, y, p.carry = x[:, :cut], y[:, :cut], None
        lr = lr_at(p.step, self.cfg, p.planned_steps or math.inf)  # unknown yet: no decay
        mix = sampling_prob(p.step, self.cfg, p.planned_steps)
        started = self.clock()
        try:
            result = self.train_step(x, y, lr, p.carry, mix=mix, step=p.step)
        except NonFiniteLoss as e:
            kept = "the last good checkpoint is kept" if self.rundir.checkpoints() else "no checkpoint yet"
            fp32 = ", or use --precision fp32" if self.train_step.dtype != torch.float32 else ""
            raise TrainingError(
                f"{e} at step {p.step + 1}; {kept}. Lower --lr or set --clip 1.0{fp32}"
            ) from None
        seconds = self.clock() - started
        if self.batches.carries_state and cut == self.cfg.seq_len:
            p.carry = result.state
        loss = result.loss  # this rank's rows; under torchrun, the whole batch's (ranks hold equal shares)
        if self.ranks.enabled:
            loss = distributed.sum_all([loss], self.ranks)[0] / self.ranks.world
        p.step += 1
        p.train_time += seconds
        p.last_loss = loss
        return loss, result.grad_norm, seconds

    def _loop(self, signals: StopSignals) -> TrainResult:
        cfg, spe, p = self.cfg, self.steps_per_epoch, self.progress
        self.train_step.model.train()
        self.train_step.compute.train()
        note = self.train_step.choose_lstm_kernel(cfg.lstm_kernel, cfg.seq_len)
        if note:
            self.reporter.line(note)
        self.reporter.start(self.step_limit or 0, p.step)
        self._core_wait.take()
        # the losses of the log line and of the epoch under way: a resumed run reports them whole
        window_losses, epoch_losses = p.window_losses, p.epoch_losses
        epoch_start = self.clock()
        evaluated_at = saved_at = p.step
        reason = self._stop_reason()
        interrupted = False
        try:
            while reason is None:
                epoch, index = divmod(p.step, spe)
                if index == 0:
                    p.carry = None
                    epoch_start = self.clock()
                    epoch_losses.clear()
                loss, grad_norm, seconds = self._one_step(epoch, index)
                p.window_time += seconds
                window_losses.append(loss)
                epoch_losses.append(loss)
                if p.step in (PROBE_STEPS, PROBE_STEPS * 10) or p.step % 500 == 0:
                    self._plan_for_budget()
                window = chars_before(p.step, cfg) - chars_before(p.step - len(window_losses), cfg)
                chars_per_s = window * cfg.batch_size / max(p.window_time, 1e-9)
                self.reporter.update(p.step, loss, chars_per_s)
                if p.step % cfg.log_every == 0:
                    self._log(epoch, window_losses, grad_norm, chars_per_s)
                    window_losses.clear()
                    p.window_time = 0.0
                end_of_epoch = p.step % spe == 0
                reason = self._stop_reason()
                if end_of_epoch or (cfg.eval_every and p.step % cfg.eval_every == 0) or reason:
                    self._after_eval(self.evaluate())
                    evaluated_at = p.step
                if end_of_epoch:
                    self.reporter.epoch_end(epoch, epoch_losses, self.last_val, self.clock() - epoch_start)
                if end_of_epoch or (cfg.save_every and p.step % cfg.save_every == 0) or reason:
                    self.save_checkpoint()
                    saved_at = p.step
                if reason is None:
                    reason = self._agreed_signal(signals)
        except KeyboardInterrupt:  # a second Ctrl-C: the step it cut short may be half done
            interrupted = True
        finally:
            self.reporter.close()
        if interrupted:
            second = signals.received == signal.SIGINT
            raise self._interrupted("a second Ctrl-C" if second else "an interrupt")
        if reason not in STOP_NAMES:  # a signal in the last step stops the run too, before what follows it
            reason = self._agreed_signal(signals) or reason
        if reason in STOP_NAMES:
            return self._stopped_by_signal(reason, saved_at)
        if evaluated_at != p.step or not self.has_model:
            self._after_eval(self.evaluate())
        if saved_at != p.step:
            self.save_checkpoint()
        return self._result(reason or "done")

    def _interrupted(self, cause: str) -> Stopped:
        """What a second Ctrl-C (or a KeyboardInterrupt raised in a step) ends with: nothing saved from a
        state a step may have left half done."""
        found = self.rundir.checkpoints() if self.ranks.is_main else []
        kept = (
            f"continue from {found[-1]} with: charnn train --out {self.rundir.path} --resume"
            if found
            else "there is no checkpoint yet"
        )
        return Stopped(f"stopped at once by {cause}, nothing saved since the last checkpoint; {kept}", 130)

    def _stopped_by_signal(self, name: str, saved_at: int) -> TrainResult:
        path = self.save_checkpoint() if saved_at != self.step else None
        if path is None and self.ranks.is_main:
            path = self.rundir.checkpoints()[-1]
        saved = f"checkpoint saved to {path}" if path else "rank 0 saved a checkpoint"
        raise Stopped(
            f"stopped by {name} at step {self.step}; {saved}; "
            f"continue with: charnn train --out {self.rundir.path} --resume",
            128 + signal.Signals[name].value,  # the shell's status for a process a signal ended: 130, 143
            quiet=not self.ranks.is_main,  # rank 0 alone says it, as it alone saves
        )

    def _log(self, epoch: int, losses: list[float], grad_norm: float, chars_per_s: float) -> None:
        mean = sum(losses) / len(losses)
        lr = self.train_step.optimizer.param_groups[0]["lr"]
        self.reporter.line(
            f"Epoch {epoch + 1} Step {self.step} Loss {mean:.4f}  lr {lr:.2e}  {chars_per_s:,.0f} chars/s"
        )
        if self.ranks.is_main:
            self._record(loss=mean, lr=lr, grad_norm=grad_norm, chars_per_s=chars_per_s)
        busy = distributed.agree(self._core_wait.take() or 0.0, self.ranks)  # the busiest rank's
        self.reporter.busy_cores(busy, len(losses))

    def _result(self, reason: str) -> TrainResult:
        p = self.progress
        return TrainResult(
            run_dir=self.rundir.path,
            steps=p.step,
            epochs=p.step / self.steps_per_epoch,
            chars_seen=self.chars_seen,
            train_loss=p.last_loss,
            val_loss=p.best_val,
            elapsed_s=p.train_time,
            stopped_by=reason,
        )
