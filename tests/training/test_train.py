import json
import math
import random
from dataclasses import fields
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import charnn
from charnn.config import TrainConfig, parse_duration
from charnn.device import cpu_kind, cpu_times_s
from charnn.errors import ConfigError, DataError, RunDirError
from charnn.presets import settings_for
from charnn.training.schedule import lr_at
from conftest import TINY, FakeClock, busy_cores


def weights(run):
    return load_file(str(run / "model" / "model.safetensors"))


def test_run_folder_has_the_documented_layout(trained_run):
    names = sorted(p.name for p in trained_run.iterdir())
    assert names == [".lock", "checkpoints", "loss.png", "metrics.jsonl", "model", "train_args.json"]
    assert sorted(p.name for p in (trained_run / "model").iterdir()) == [
        "config.json",
        "model.safetensors",
        "vocab.json",
    ]
    checkpoints = sorted((trained_run / "checkpoints").iterdir())
    assert [c.name for c in checkpoints] == ["step-000000059", "step-000000060"]  # end of epoch 1, end of run
    for ckpt in checkpoints:
        files = sorted(p.name for p in ckpt.iterdir())
        assert files == ["model.safetensors", "optimizer.safetensors", "state.json"]
    args = json.loads((trained_run / "train_args.json").read_text())
    assert args["train"]["lr"] == 1e-3 and args["train"]["seq_len"] == 32 and args["model"]["hidden"] == 32
    assert set(args["train"]) == {f.name for f in fields(TrainConfig)} and args["skipped_files"] == []
    lines = [json.loads(x) for x in (trained_run / "metrics.jsonl").read_text().splitlines()]
    assert any("val_loss" in x for x in lines) and any("loss" in x and "chars_per_s" in x for x in lines)


def test_tiny_model_overfits_a_short_text(tmp_path):
    text = "the quick brown fox jumps over the lazy dog. " * 40
    (tmp_path / "fox.txt").write_text(text)
    result = charnn.train(
        tmp_path / "run",
        data=str(tmp_path / "fox.txt"),
        hidden=64,
        embedding=16,
        seq_len=20,
        batch_size=8,
        lr=1e-2,
        max_steps=150,
        val_fraction=0.2,
        precision="fp32",
        quiet=True,
    )
    assert result.train_loss < 0.1
    assert result.val_loss < 0.1
    assert charnn.generate(tmp_path / "run", "the quick", 39, greedy=True) == (
        "the quick brown fox jumps over the lazy dog. the"
    )


def test_same_seed_gives_identical_weights(tmp_path, corpus_file):
    for name in ("a", "b"):
        charnn.train(tmp_path / name, data=str(corpus_file), max_steps=12, quiet=True, **TINY)
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    charnn.train(tmp_path / "c", data=str(corpus_file), max_steps=12, quiet=True, seed=5, **TINY)
    c = weights(tmp_path / "c")
    assert not all(torch.equal(a[k], c[k]) for k in a)


KERNELS = [("fp32", "pytorch")]
if cpu_kind() != "fp32":
    KERNELS += [("bf16", "pytorch"), ("bf16", "charnn-bf16")]


@pytest.mark.parametrize("precision, kernel", KERNELS)
@pytest.mark.parametrize("batching", ["windows", "stream"])
def test_resume_continues_bit_for_bit(tmp_path, corpus_file, batching, precision, kernel):
    common = dict(
        data=str(corpus_file), batching=batching, dropout=0.1, io_dropout=0.1, layers=2, quiet=True, **TINY
    )
    common.update(precision=precision, lstm_kernel=kernel, weight_dropout=0.2)
    charnn.train(tmp_path / "straight", max_steps=20, **common)
    charnn.train(tmp_path / "split", max_steps=9, **common)
    result = charnn.train(tmp_path / "split", resume=True, max_steps=20, quiet=True)
    assert result.steps == 20
    a = load_file(str(tmp_path / "straight/checkpoints/step-000000020/model.safetensors"))
    b = load_file(str(tmp_path / "split/checkpoints/step-000000020/model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    state = json.loads((tmp_path / "split/checkpoints/step-000000020/state.json").read_text())
    assert state["lstm_kernel"] == kernel
    config = json.loads((tmp_path / "split/model/config.json").read_text())
    assert config["training"]["lstm_kernel"] == kernel


@pytest.mark.skipif(cpu_kind() == "fp32", reason="this CPU has no native bf16")
def test_a_resumed_run_keeps_the_lstm_kernel_it_chose(tmp_path, corpus_file):
    common = {**TINY, "precision": "bf16", "lstm_kernel": "auto"}
    charnn.train(tmp_path / "run", data=str(corpus_file), max_steps=3, quiet=True, **common)
    chosen = json.loads((tmp_path / "run/checkpoints/step-000000003/state.json").read_text())["lstm_kernel"]
    assert chosen in ("pytorch", "charnn-bf16")
    other = "pytorch" if chosen == "charnn-bf16" else "charnn-bf16"
    with pytest.raises(ConfigError, match=f"lstm_kernel 'auto' -> '{other}'"):
        charnn.train(tmp_path / "run", resume=True, max_steps=5, lstm_kernel=other, quiet=True)
    charnn.train(tmp_path / "run", resume=True, max_steps=5, quiet=True)
    resumed = json.loads((tmp_path / "run/checkpoints/step-000000005/state.json").read_text())
    assert resumed["lstm_kernel"] == chosen


@pytest.mark.skipif(cpu_kind() == "fp32", reason="this CPU has no native bf16")
def test_the_two_bf16_lstm_kernels_learn_alike(tmp_path, corpus_file):
    losses = {}
    for kernel in ("pytorch", "charnn-bf16"):
        common = {**TINY, "precision": "bf16", "lstm_kernel": kernel}
        result = charnn.train(tmp_path / kernel, data=str(corpus_file), max_steps=40, quiet=True, **common)
        losses[kernel] = result.train_loss
    print(f"bf16 train loss after 40 steps: {losses}")
    assert abs(losses["charnn-bf16"] - losses["pytorch"]) / losses["pytorch"] < 0.01


def test_resume_refuses_other_settings_but_allows_new_stopping_point(tmp_path, corpus_file):
    charnn.train(tmp_path / "run", data=str(corpus_file), max_steps=5, quiet=True, **TINY)
    with pytest.raises(ConfigError, match="lr 0.001 -> 0.01"):
        charnn.train(tmp_path / "run", resume=True, lr=0.01, quiet=True)
    assert charnn.train(tmp_path / "run", resume=True, max_steps=8, quiet=True).steps == 8


def test_existing_run_is_not_overwritten_by_accident(tmp_path, corpus_file):
    charnn.train(tmp_path / "run", data=str(corpus_file), max_steps=3, quiet=True, **TINY)
    before = (tmp_path / "run" / "model" / "model.safetensors").read_bytes()
    with pytest.raises(RunDirError, match="--resume.*--overwrite"):
        charnn.train(tmp_path / "run", data=str(corpus_file), max_steps=3, quiet=True, **TINY)
    assert (tmp_path / "run" / "model" / "model.safetensors").read_bytes() == before
    charnn.train(
        tmp_path / "run", data=str(corpus_file), max_steps=3, overwrite=True, seed=1, quiet=True, **TINY
    )
    assert (tmp_path / "run" / "model" / "model.safetensors").read_bytes() != before


def noise_run(tmp_path: Path, **settings) -> dict:
    """60 steps on 6,000 random chars of 10 kinds, validated every 5: nothing to learn but how often each
    char comes, so the validation loss is lowest at step 10 and rises as the model learns the training
    part by heart. The best evaluation, from metrics.jsonl."""
    rnd = random.Random(0)
    (tmp_path / "noise.txt").write_text("".join(rnd.choice("abcdefgh \n") for _ in range(6000)))
    run = tmp_path / "run"
    charnn.train(
        run,
        data=str(tmp_path / "noise.txt"),
        max_steps=60,
        eval_every=5,
        lr=0.05,
        quiet=True,
        **TINY,
        **settings,
    )
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [e for e in metrics if "val_loss" in e]
    best = min(evals, key=lambda e: e["val_loss"])
    assert best["step"] < evals[-1]["step"] - 10  # the best is not the last
    return best


def test_best_model_is_kept_by_validation_loss(tmp_path):
    best = noise_run(tmp_path)
    info = json.loads((tmp_path / "run/model/config.json").read_text())
    assert info["training"]["steps"] == best["step"]
    assert info["training"]["val_loss"] == pytest.approx(best["val_loss"])


def test_epochs_default_to_ten_and_checkpoint_once_per_epoch(tmp_path):
    text = "abcdefghij" * 120  # 1200 chars: 1080 train -> 32 windows of 33 -> 4 batches of 8
    (tmp_path / "t.txt").write_text(text)
    result = charnn.train(tmp_path / "run", data=str(tmp_path / "t.txt"), quiet=True, keep=100, **TINY)
    assert result.steps == 40 and result.epochs == 10
    steps = sorted(int(p.name[5:]) for p in (tmp_path / "run/checkpoints").iterdir())
    assert steps == list(range(4, 41, 4))


def test_keep_limits_checkpoints_but_never_drops_the_best(tmp_path):
    best = noise_run(tmp_path, save_every=5, keep=2)["step"]
    names = sorted(p.name for p in (tmp_path / "run/checkpoints").iterdir())
    assert names == [f"step-{best:09d}", "step-000000055", "step-000000060"]


def test_too_short_corpus_and_tiny_validation_split_are_explained(tmp_path):
    (tmp_path / "short.txt").write_text("hello world\n" * 5)
    with pytest.raises(DataError, match="one batch needs"):
        charnn.train(tmp_path / "run", data=str(tmp_path / "short.txt"), quiet=True)
    assert not (tmp_path / "run").exists()  # nothing created for a run that could not start
    (tmp_path / "mid.txt").write_text("hello world\n" * 20)
    with pytest.raises(DataError, match="validation split holds"):
        charnn.train(
            tmp_path / "run", data=str(tmp_path / "mid.txt"), quiet=True, **{**TINY, "batch_size": 2}
        )


def test_learning_rate_schedules():
    constant = TrainConfig(lr=1.0)
    assert lr_at(0, constant, 100) == lr_at(99, constant, 100) == 1.0
    warm = TrainConfig(lr=1.0, warmup=10, schedule="cosine")
    assert lr_at(0, warm, 110) == pytest.approx(0.1)
    assert lr_at(9, warm, 110) == pytest.approx(1.0)
    assert lr_at(60, warm, 110) == pytest.approx(0.55)
    assert lr_at(110, warm, 110) == pytest.approx(0.1)
    assert lr_at(500, warm, 110) == pytest.approx(0.1)


def test_presets_and_overrides():
    model, cfg = settings_for("seed", {})
    assert model == {} and cfg == TrainConfig()
    assert cfg.epoch_limit == 10
    model, cfg = settings_for("small", {"hidden": 128, "lr": None})
    assert model["hidden"] == 128 and cfg.lr == 3e-3
    with pytest.raises(ConfigError, match="unknown preset"):
        settings_for("huge", {})
    with pytest.raises(ConfigError, match="--hidden must be at least 1, got -3"):
        settings_for("seed", {"hidden": -3})


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("10m", 600), ("2h", 7200), ("1.5", 1.5)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "ten minutes", "0m", "-5s", "5d"])
def test_bad_durations(bad):
    with pytest.raises(ConfigError):
        parse_duration(bad)


def test_time_budget_stops_training_after_that_much_step_time(tmp_path, corpus_file):
    clock = FakeClock(tick=0.25)  # every training step takes a quarter of a second
    result = charnn.train(
        tmp_path / "run", data=str(corpus_file), time_budget=1.5, quiet=True, clock=clock, **TINY
    )
    assert result.stopped_by == "time budget"
    assert result.steps == 6 and result.elapsed_s == 1.5 and math.isfinite(result.train_loss)
    assert json.loads((tmp_path / "run/model/config.json").read_text())["training"]["steps"] == 6


def test_cosine_schedule_is_sized_to_the_time_budget(tmp_path, corpus_file):
    clock = FakeClock(tick=1 / 64)  # a power of two: the budget's sums are exact
    settings = dict(time_budget=100 / 64, schedule="cosine", lr=0.01, quiet=True, clock=clock)
    result = charnn.train(tmp_path / "run", data=str(corpus_file), **settings, **{**TINY, "log_every": 5})
    assert result.steps == 100
    logged = [json.loads(x) for x in (tmp_path / "run/metrics.jsonl").read_text().splitlines() if '"lr"' in x]
    cfg = TrainConfig(schedule="cosine", lr=0.01)
    for line in logged[2:]:  # from step 10 on, the schedule is sized to the 100 steps the budget allows
        assert line["lr"] == pytest.approx(lr_at(line["step"] - 1, cfg, 100))
    assert logged[-1]["lr"] < 0.0011  # decayed to 10% at the end of the budget


def test_stream_batching_clips_by_default():
    assert TrainConfig(batching="stream").clip == 5.0
    assert TrainConfig().clip == 0.0
    assert TrainConfig(batching="stream", clip=0.5).clip == 0.5


def test_weight_decay_uses_adamw_and_is_recorded(tmp_path, corpus_file):
    charnn.train(tmp_path / "run", data=str(corpus_file), max_steps=3, weight_decay=0.1, quiet=True, **TINY)
    (ckpt,) = (tmp_path / "run/checkpoints").iterdir()
    groups = json.loads((ckpt / "state.json").read_text())["optimizer"]["param_groups"]
    assert groups[0]["weight_decay"] == 0.1 and groups[0]["decoupled_weight_decay"] is True


@pytest.mark.skipif(cpu_kind() == "fp32", reason="this CPU has no native bf16")
def test_a_run_saved_before_the_lstm_kernel_setting_resumes_with_its_kernel(tmp_path, corpus_file):
    common = {**TINY, "precision": "bf16", "data": str(corpus_file), "quiet": True}
    charnn.train(tmp_path / "run", max_steps=4, lstm_kernel="charnn-bf16", **common)
    state_path = tmp_path / "run/checkpoints/step-000000004/state.json"
    state = json.loads(state_path.read_text())  # as charnn wrote it before the setting existed:
    state["recurrent_kernel"] = {"charnn-bf16": "charnn"}[state.pop("lstm_kernel")]
    state_path.write_text(json.dumps(state))
    args = json.loads((tmp_path / "run/train_args.json").read_text())
    for key in ("lstm_kernel", "dist_timeout"):
        del args["train"][key]
    (tmp_path / "run/train_args.json").write_text(json.dumps(args))
    charnn.train(tmp_path / "run", resume=True, max_steps=6, quiet=True)
    resumed = json.loads((tmp_path / "run/checkpoints/step-000000006/state.json").read_text())
    assert resumed["lstm_kernel"] == "charnn-bf16"


@pytest.mark.skipif(cpu_times_s() is None, reason="this system does not say how long threads wait for a core")
def test_a_run_says_once_when_other_programs_hold_the_cores(tmp_path, corpus_file, capsys):
    settings = {**TINY, "hidden": 128, "log_every": 25, "max_steps": 100, "eval_every": 0}
    with busy_cores():
        charnn.train(tmp_path / "run", data=str(corpus_file), **settings)
    out = capsys.readouterr().out
    assert out.count("this run waited for a core") == 1, out
    assert "other programs are busy on this machine" in out
