"""What --resume keeps and what it may change: the stop settings, the data path as given, the schedule of a
time budget, the model a stop saves, and damaged run files refused in one line."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import charnn
from charnn.store.checkpoint import load_checkpoint
from charnn.store.rundir import RunDir
from charnn.training.loop import Stopped
from conftest import TINY, TINY_FLAGS, FakeClock, assert_clean_error, ctrl_c_in_step, run_cli, tiny_loop


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("a quick brown fox jumps over the lazy dog\nthe dog sleeps.\n" * 100)
    return path


def trained_steps(result) -> int:
    assert result.returncode == 0, result.stderr
    return int(result.stderr.split("trained ")[1].split()[0])


def test_a_stop_setting_given_on_resume_replaces_the_saved_ones(tmp_path, corpus):
    first = run_cli(
        "train", "--data", "corpus.txt", "--out", "run", *TINY_FLAGS, "--epochs", "1", cwd=tmp_path
    )
    per_epoch = trained_steps(first)
    resume = ["train", "--out", "run", "--resume", "--quiet"]
    more = run_cli(*resume, "--max-steps", str(per_epoch + 3), cwd=tmp_path)
    assert trained_steps(more) == per_epoch + 3 and "already reached" not in more.stderr
    assert (
        trained_steps(run_cli(*resume, "--epochs", "2", cwd=tmp_path)) == 2 * per_epoch
    )  # the max-steps went
    again = run_cli(*resume, "--epochs", "2", "--data", "corpus.txt", cwd=tmp_path)  # the path as first given
    assert trained_steps(again) == 2 * per_epoch
    assert "already reached its stop at step" in again.stderr and "a larger --max-steps" in again.stderr
    assert_clean_error(
        run_cli(*resume, "--preset", "tiny", cwd=tmp_path), "--preset tiny", "started with seed"
    )
    assert trained_steps(run_cli(*resume, "--preset", "seed", "--epochs", "3", cwd=tmp_path)) == 3 * per_epoch


def test_a_resumed_time_budget_keeps_its_planned_schedule(tmp_path, corpus):
    settings = {"time_budget": 4.0, "max_steps": 100_000, "schedule": "cosine"}
    first = tiny_loop(tmp_path / "run", corpus, clock=FakeClock(0.01), **settings)
    first.run()
    planned = first.progress.planned_steps
    assert 0 < planned < 100_000
    second = tiny_loop(tmp_path / "run", corpus, prepare=False, **settings)
    second.restore(load_checkpoint(first.rundir.checkpoints()[-1]))
    assert second.progress.planned_steps == planned


def test_a_stop_before_the_first_evaluation_saves_a_model_that_the_next_evaluation_replaces(tmp_path, corpus):
    settings = {"max_steps": 12, "eval_every": 8}
    whole = tiny_loop(tmp_path / "whole", corpus, **settings)
    whole.run()
    cut = tiny_loop(tmp_path / "cut", corpus, **settings)
    ctrl_c_in_step(cut, 3, presses=1)
    with pytest.raises(Stopped, match="stopped by SIGINT at step 3"):
        cut.run()
    saved = json.loads((cut.rundir.checkpoints()[-1] / "state.json").read_text())
    assert saved["best_val_loss"] is None and (cut.rundir.model_dir / "model.safetensors").exists()
    assert not cut.rundir.metrics_path.exists() or "val_loss" not in cut.rundir.metrics_path.read_text()
    resumed = tiny_loop(tmp_path / "cut", corpus, prepare=False, **settings)
    resumed.restore(load_checkpoint(cut.rundir.checkpoints()[-1]))
    resumed.run()
    a, b = (load_file(str(tmp_path / n / "model" / "model.safetensors")) for n in ("whole", "cut"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.progress.best_step == whole.progress.best_step


def damage_state(run: Path, **fields) -> None:
    path = RunDir(run).checkpoints()[-1] / "state.json"
    state = json.loads(path.read_text())
    path.write_text(json.dumps({**state, **fields}))


@pytest.mark.parametrize(
    "damage",
    [
        {"step": -3},
        {"step": 2},
        {"format_version": "x"},
        {"best_val_loss": "x"},
        {"planned_steps": 1.5},
    ],
    ids=str,
)
def test_a_damaged_checkpoint_is_one_line_and_the_metrics_are_kept(tmp_path, corpus, damage):
    charnn.train(tmp_path / "run", data=str(corpus), max_steps=4, quiet=True, **{**TINY, "log_every": 1})
    metrics = (tmp_path / "run" / "metrics.jsonl").read_bytes()
    damage_state(tmp_path / "run", **damage)
    result = run_cli("train", "--out", str(tmp_path / "run"), "--resume", "--max-steps", "6")
    assert_clean_error(result, "state.json", "damaged", "delete this checkpoint folder")
    assert (tmp_path / "run" / "metrics.jsonl").read_bytes() == metrics


def test_damaged_checkpoint_weights_get_advice_train_can_follow(tmp_path, corpus):
    charnn.train(tmp_path / "run", data=str(corpus), max_steps=4, quiet=True, **TINY)
    weights = RunDir(tmp_path / "run").checkpoints()[-1] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    result = run_cli("train", "--out", str(tmp_path / "run"), "--resume", "--max-steps", "6")
    assert_clean_error(result, "sha256 does not match", "delete this checkpoint folder")
    assert "--no-verify" not in result.stderr


@pytest.mark.parametrize("damage", [{"train": []}, {"init_from": {"path": "x"}}, {"model": "x"}], ids=str)
def test_a_damaged_train_args_file_is_one_line(tmp_path, corpus, damage):
    charnn.train(tmp_path / "run", data=str(corpus), max_steps=4, quiet=True, **TINY)
    args = tmp_path / "run" / "train_args.json"
    args.write_text(json.dumps({**json.loads(args.read_text()), **damage}))
    result = run_cli("train", "--out", str(tmp_path / "run"), "--resume", "--max-steps", "6")
    assert_clean_error(result, "train_args.json", "damaged")


@pytest.mark.parametrize("text", ["{", '{"preset": "tiny"}', "[]", "null", '"x"', "\xff"], ids=repr)
def test_a_train_args_file_that_lost_its_settings_is_damaged_not_defaults(tmp_path, corpus, text):
    charnn.train(tmp_path / "run", data=str(corpus), max_steps=4, quiet=True, **TINY)
    (tmp_path / "run" / "train_args.json").write_bytes(text.encode("latin-1"))
    result = run_cli("train", "--out", str(tmp_path / "run"), "--resume", "--max-steps", "6")
    assert_clean_error(result, "train_args.json: damaged", "records the run's settings")
    assert "different text" not in result.stderr  # not resumed on defaults (the data shakespeare)


def test_the_log_lines_after_a_resume_are_those_of_a_run_never_stopped(tmp_path, corpus):
    common = ["--data", str(corpus), *TINY_FLAGS, "--log-every", "5", "--quiet"]
    assert run_cli("train", "--out", "whole", *common, "--max-steps", "20", cwd=tmp_path).returncode == 0
    assert run_cli("train", "--out", "cut", *common, "--max-steps", "13", cwd=tmp_path).returncode == 0
    resumed = run_cli("train", "--out", "cut", "--resume", "--max-steps", "20", "--quiet", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr

    def logged(run: str) -> dict[int, float]:
        lines = [json.loads(x) for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        return {r["step"]: r["loss"] for r in lines if "loss" in r}

    assert logged("cut") == logged("whole") and set(logged("whole")) == {5, 10, 15, 20}


def test_a_run_whose_text_moved_resumes_from_where_it_is_now(tmp_path, corpus):
    """--data was a setting no resume could change: a moved text, or another machine's path, ended the run."""
    first = run_cli(
        "train", "--out", "run", "--data", str(corpus), "--max-steps", "3", *TINY_FLAGS, cwd=tmp_path
    )
    assert first.returncode == 0, first.stderr
    moved = corpus.rename(tmp_path / "moved.txt")
    resume = ["train", "--out", "run", "--resume", "--max-steps"]
    gone = run_cli(*resume, "5", cwd=tmp_path)
    assert_clean_error(gone, f"{corpus}: the run's text is no longer there; resume with --data PATH")
    (tmp_path / "other.txt").write_text(moved.read_text().replace("e", "a"))
    other = run_cli(*resume, "5", "--data", "other.txt", cwd=tmp_path)
    assert_clean_error(other, "was trained on a different text than")
    resumed = run_cli(*resume, "5", "--data", "moved.txt", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    saved = json.loads((tmp_path / "run/train_args.json").read_text())["train"]
    assert saved["data"] == str(moved) and saved["max_steps"] == 5  # where the next resume finds the text
    again = run_cli(*resume, "6", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
