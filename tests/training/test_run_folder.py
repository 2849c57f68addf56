"""What a run folder keeps through failures: an overwrite that fails, a torn metrics line, a second Ctrl-C,
a folder charnn did not make."""

import json
from pathlib import Path

import pytest
import torch

from charnn.errors import RunDirError
from charnn.store.checkpoint import load_checkpoint
from charnn.store.rundir import RunDir
from charnn.training.loop import Stopped
from conftest import TINY_FLAGS, assert_clean_error, ctrl_c_in_step, run_cli, snapshot, tiny_loop, tmpfs


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("a quick brown fox jumps over the lazy dog\nthe dog sleeps.\n" * 400)
    return path


def run_files(run: Path) -> dict[str, bytes]:
    return {name: data for name, data in snapshot(run).items() if name != ".lock"}


def test_an_overwrite_that_fails_before_its_first_checkpoint_puts_the_old_run_back(tmp_path, corpus):
    common = ["--data", str(corpus), "--out", "run", "--quiet", *TINY_FLAGS]
    assert run_cli("train", *common, "--max-steps", "5", cwd=tmp_path).returncode == 0
    before = run_files(tmp_path / "run")
    diverging = ["--overwrite", "--max-steps", "50", "--lr", "10", "--weight-decay", "1000000"]
    result = run_cli("train", *common, *diverging, cwd=tmp_path)
    assert_clean_error(result, "loss became nan", "no checkpoint yet", "Lower --lr")
    assert "--precision fp32" not in result.stderr  # the run was fp32 already
    assert run_files(tmp_path / "run") == before
    resumed = run_cli("train", "--out", "run", "--resume", "--max-steps", "7", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr


def test_an_overwrite_killed_before_its_first_checkpoint_resumes_the_run_it_replaced(tmp_path, corpus):
    common = ["--data", str(corpus), "--out", "run", "--quiet", *TINY_FLAGS]
    assert run_cli("train", *common, "--max-steps", "5", cwd=tmp_path).returncode == 0
    saved = (tmp_path / "run/train_args.json").read_text()
    run = RunDir(tmp_path / "run")  # what a SIGKILL leaves of an --overwrite before its first checkpoint:
    run.prepare(resume=False, overwrite=True)  # the old run set aside, the new one's settings written
    run.write_args({**json.loads(saved), "train": {**json.loads(saved)["train"], "lr": 0.5}})
    run.unlock()
    shown = run_cli("generate", "run", "--length", "5", cwd=tmp_path)
    assert_clean_error(shown, "stopped before its first checkpoint", "comes back with", "--resume")
    changed = run_cli("train", "--out", "run", "--resume", "--lr", "0.5", "--max-steps", "8", cwd=tmp_path)
    assert_clean_error(changed, "cannot resume with different settings")
    resumed = run_cli("train", "--out", "run", "--resume", "--max-steps", "8", cwd=tmp_path)
    assert resumed.returncode == 0 and "trained 8 steps" in resumed.stderr, resumed.stderr
    now = json.loads((tmp_path / "run/train_args.json").read_text())
    assert now["train"]["lr"] == json.loads(saved)["train"]["lr"] != 0.5  # its own, not the new run's


def test_an_overwrite_that_saves_a_checkpoint_leaves_nothing_of_the_old_run(tmp_path, corpus):
    common = ["--data", str(corpus), "--out", "run", *TINY_FLAGS]
    assert run_cli("train", *common, "--max-steps", "6", cwd=tmp_path).returncode == 0
    result = run_cli("train", *common, "--max-steps", "3", "--overwrite", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run = tmp_path / "run"
    assert [p.name for p in RunDir(run).checkpoints()] == ["step-000000003"]
    assert max(json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()) == 3
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == [".lock"]


def test_a_folder_holding_a_model_folder_charnn_did_not_write_is_refused_even_with_overwrite(
    tmp_path, corpus
):
    mine = tmp_path / "project" / "model" / "notes.txt"
    mine.parent.mkdir(parents=True)
    mine.write_text("mine", encoding="utf-8")
    for extra in ([], ["--overwrite"]):
        result = run_cli(
            "train", "--data", str(corpus), "--out", str(tmp_path / "project"), *TINY_FLAGS, *extra
        )
        assert_clean_error(result, "model/", "charnn did not write", "another --out")
    assert mine.read_text(encoding="utf-8") == "mine"


def test_a_torn_metrics_line_does_not_stop_a_resume(tmp_path, corpus):
    common = ["--out", "run", "--log-every", "1"]
    assert (
        run_cli(
            "train", "--data", str(corpus), *common, *TINY_FLAGS, "--max-steps", "4", cwd=tmp_path
        ).returncode
        == 0
    )
    metrics = tmp_path / "run" / "metrics.jsonl"
    with open(metrics, "a", encoding="utf-8") as f:
        f.write('{"step": 21, "ep')  # what a power cut leaves
    result = run_cli("train", *common, "--resume", "--max-steps", "6", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert steps[-1] == 6 and 21 not in steps


def test_a_full_disk_never_leaves_a_torn_metrics_line(tmp_path):
    with tmpfs(tmp_path / "disk", 64) as disk:
        run = RunDir(disk / "run")
        run.path.mkdir()
        written = []
        with pytest.raises(RunDirError, match="No space left on device.*untouched"):
            for i in range(100):
                record = {"step": i, "note": "x" * 6000}  # each line spans pages: a write fails midway
                run.append_metrics(record)
                written.append(record)
        assert written and run.read_metrics() == written
        assert run.metrics_path.read_text(encoding="utf-8").endswith("\n")


def test_a_second_ctrl_c_inside_a_step_saves_nothing_and_the_resume_stays_exact(tmp_path, corpus):
    settings = {"max_steps": 8, "save_every": 3}
    whole = tiny_loop(tmp_path / "whole", corpus, **settings)
    whole.run()
    cut = tiny_loop(tmp_path / "cut", corpus, **settings)
    ctrl_c_in_step(cut, 5, presses=2)
    with pytest.raises(Stopped, match="second Ctrl-C, nothing saved.*continue from .*step-000000003") as stop:
        cut.run()
    assert stop.value.exit_code == 130
    assert [p.name for p in cut.rundir.checkpoints()] == ["step-000000003"]
    cut.rundir.unlock()
    resumed = tiny_loop(tmp_path / "cut", corpus, prepare=False, **settings)
    resumed.restore(load_checkpoint(resumed.rundir.checkpoints()[-1]))
    resumed.run()
    for a, b in zip(whole.train_step.model.parameters(), resumed.train_step.model.parameters(), strict=True):
        assert torch.equal(a, b)
