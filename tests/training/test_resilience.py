"""Training never loses saved work: kills, signals, full or read-only disks, NaN, mismatched resumes."""

import math
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import charnn
from charnn.config import ModelConfig, TrainConfig
from charnn.errors import ModelFileError, TrainingError
from charnn.store.checkpoint import load_checkpoint
from charnn.store.model_dir import load_model
from charnn.store.rundir import RunDir
from charnn.text.corpus import load_corpus
from charnn.training.loop import Loop
from charnn.training.progress import Reporter
from conftest import TINY, TINY_FLAGS, assert_clean_error, run_cli, snapshot, tmpfs


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("a quick brown fox jumps over the lazy dog\nthe dog sleeps.\n" * 400)
    return path


def leftovers(run: Path) -> list[Path]:
    """Temporary files and folders left in a run (the lock file is meant to stay)."""
    return [p for folder in (run, run / "checkpoints") for p in folder.glob(".*") if p.name != ".lock"]


def popen_train(cwd: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "charnn", "train", "--out", "run", "--log-every", "1", *args]
    return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def wait_for_step(proc: subprocess.Popen, step: int) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        if f" Step {step} " in line:
            return
    raise AssertionError(f"training ended before step {step}: {proc.stderr.read() if proc.stderr else ''}")


def test_sigkill_at_random_moments_loses_nothing_and_resume_is_exact(tmp_path, corpus):
    total = 120
    common = [
        "--data",
        str(corpus),
        "--max-steps",
        str(total),
        "--save-every",
        "3",
        "--dropout",
        "0.1",
        "--layers",
        "2",
        *TINY_FLAGS,
    ]
    straight = tmp_path / "straight"
    straight.mkdir()
    assert run_cli("train", "--out", "run", "--quiet", *common, cwd=straight).returncode == 0
    killed = tmp_path / "killed"
    killed.mkdir()
    rng = random.Random(1234)
    target = 0
    for round_ in range(4):
        target += rng.randint(5, 25)
        proc = popen_train(killed, *(common if round_ == 0 else ["--resume"]))
        wait_for_step(proc, target)
        proc.kill()
        proc.wait(timeout=30)
        newest = RunDir(killed / "run").checkpoints()[-1]
        load_checkpoint(newest)  # complete and verified, whatever moment the kill hit
        assert int(newest.name[5:]) >= 3 * ((target - 1) // 3)  # every save finished before it is still there
        load_model(killed / "run")
    result = run_cli("train", "--out", "run", "--resume", "--quiet", cwd=killed)
    assert result.returncode == 0, result.stderr
    final = f"checkpoints/step-{total:09d}/model.safetensors"
    a, b = load_file(str(straight / "run" / final)), load_file(str(killed / "run" / final))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not leftovers(killed / "run")


@pytest.mark.parametrize(("stop", "status"), [("SIGTERM", 143), ("SIGHUP", 129)])  # SIGHUP: a closed terminal
def test_sigterm_saves_and_exits_143(tmp_path, corpus, stop, status):
    proc = popen_train(tmp_path, "--data", str(corpus), "--max-steps", "100000", *TINY_FLAGS)
    wait_for_step(proc, 7)
    proc.send_signal(signal.Signals[stop])
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == status, err
    assert f"stopped by {stop}" in err and "Traceback" not in err
    assert int(RunDir(tmp_path / "run").checkpoints()[-1].name[5:]) >= 7


# `charnn ARGS` in a process that sends itself SIGNAL as `run.WHERE` (start-up or the final check) begins.
SIGNAL_AT = """
import os, signal, sys
import charnn.training.run as run
from charnn.cli import main
where, name = sys.argv[1], sys.argv[2]
original = getattr(run, where)
def hit(*args, **kwargs):
    os.kill(os.getpid(), signal.Signals[name])
    return original(*args, **kwargs)
setattr(run, where, hit)
sys.exit(main(sys.argv[3:]))
"""


def signal_at(cwd: Path, where: str, name: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", SIGNAL_AT, where, name, "train", "--out", "run", "--quiet", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_sigterm_during_start_up_stops_with_one_line_and_leaves_no_run(tmp_path, corpus):
    result = signal_at(tmp_path, "load_corpus", "SIGTERM", "--data", str(corpus), *TINY_FLAGS)
    assert_clean_error(result, "stopped by SIGTERM before the first step: nothing was trained", code=143)
    assert not RunDir(tmp_path / "run").checkpoints()
    again = run_cli(
        "train", "--data", str(corpus), "--out", "run", "--max-steps", "2", *TINY_FLAGS, cwd=tmp_path
    )
    assert again.returncode == 0, again.stderr  # not "a run is there: pass --resume"


def test_sighup_during_an_overwrites_start_up_brings_the_old_run_back(tmp_path, corpus):
    flags = ["--data", str(corpus), "--max-steps", "3", *TINY_FLAGS]
    assert run_cli("train", "--out", "run", "--quiet", *flags, cwd=tmp_path).returncode == 0
    before = snapshot(tmp_path / "run")
    result = signal_at(tmp_path, "run_settings", "SIGHUP", "--overwrite", *flags)
    assert_clean_error(result, "stopped by SIGHUP", "the run it was to replace is kept as it was", code=129)
    after = snapshot(tmp_path / "run")
    assert {k: v for k, v in after.items() if k != ".lock"} == {
        k: v for k, v in before.items() if k != ".lock"
    }


@pytest.mark.parametrize(("stop", "code"), [("SIGTERM", 143), ("SIGINT", 130)])  # SIGINT: "interrupted" alone
def test_a_stop_during_the_final_weight_check_keeps_the_model_and_resume_finishes_it(
    tmp_path, corpus, stop, code
):
    result = signal_at(
        tmp_path, "weight_checks", stop, "--data", str(corpus), "--max-steps", "3", *TINY_FLAGS
    )
    assert_clean_error(
        result, f"stopped by {stop}", "step-000000003", "charnn train --out run --resume", code=code
    )
    load_model(tmp_path / "run")
    finished = run_cli("train", "--out", "run", "--resume", "--quiet", cwd=tmp_path)
    assert finished.returncode == 0, finished.stderr
    assert "val_loss" in load_model(tmp_path / "run").info["inference"]


def test_full_disk_keeps_the_previous_checkpoint(tmp_path, corpus):
    with tmpfs(tmp_path / "disk", 2048) as disk:
        first = run_cli(
            "train", "--data", str(corpus), "--out", str(disk / "run"), "--max-steps", "4", *TINY_FLAGS
        )
        assert first.returncode == 0, first.stderr
        before = snapshot(disk / "run" / "checkpoints")
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        (disk / "filler").write_bytes(b"\0" * (free - 24 * 1024))
        result = run_cli("train", "--out", str(disk / "run"), "--resume", "--max-steps", "8", "--quiet")
        assert_clean_error(result, "No space left on device", "untouched")
        assert snapshot(disk / "run" / "checkpoints") == before
        load_checkpoint(RunDir(disk / "run").checkpoints()[-1])
        load_model(disk / "run")
        assert not leftovers(disk / "run")


def test_read_only_folder_is_refused_and_left_as_it_was(tmp_path, corpus):
    with tmpfs(tmp_path / "disk", 4096) as disk:
        first = run_cli(
            "train", "--data", str(corpus), "--out", str(disk / "run"), "--max-steps", "3", *TINY_FLAGS
        )
        assert first.returncode == 0, first.stderr
        before = snapshot(disk / "run")
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        assert_clean_error(
            run_cli("train", "--out", str(disk / "run"), "--resume", "--max-steps", "6"), "not writable"
        )
        assert_clean_error(
            run_cli("train", "--data", str(corpus), "--out", str(disk / "new"), *TINY_FLAGS),
            "new",
            "Read-only file system",
        )
        assert snapshot(disk / "run") == before


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(tmp_path, corpus):
    run = RunDir(tmp_path / "run")
    run.prepare(resume=False, overwrite=False)
    data = load_corpus(str(corpus))
    cfg = TrainConfig(
        data=str(corpus), max_steps=4, **{k: v for k, v in TINY.items() if k not in ("hidden", "embedding")}
    )
    model_cfg = ModelConfig(vocab_size=len(data.vocab), hidden=32, embedding=16)
    loop = Loop.create(run, model_cfg, cfg, data, "seed", Reporter(quiet=True))
    loop.run()
    before = snapshot(run.path / "checkpoints")
    with torch.no_grad():
        loop.train_step.model.head.bias[0] = math.nan  # what an overflow does to a weight
    loop.step_limit = 8
    with pytest.raises(TrainingError, match="loss became nan at step 5; the last good checkpoint is kept"):
        loop.run()
    assert snapshot(run.path / "checkpoints") == before
    assert torch.isfinite(load_model(run.path).model.head.bias).all()


def test_resume_on_a_changed_corpus_is_refused(tmp_path, corpus):
    charnn.train(tmp_path / "run", data=str(corpus), max_steps=3, quiet=True, **TINY)
    corpus.write_text(corpus.read_text().replace("fox", "cat"))
    with pytest.raises(ModelFileError, match="different text"):
        charnn.train(tmp_path / "run", resume=True, quiet=True)


def test_crash_in_the_middle_of_a_model_swap_is_repaired_on_resume(tmp_path, corpus):
    charnn.train(tmp_path / "run", data=str(corpus), max_steps=3, quiet=True, **TINY)
    run = tmp_path / "run"
    before = snapshot(run / "model")

    def crash() -> None:
        os.replace(run / "model", run / ".model.old-99999")  # the state between the two renames
        (run / "checkpoints" / ".step-000000004.tmp-99999").mkdir()  # a half-written checkpoint

    crash()
    RunDir(run).recover()  # what a resume does first
    assert snapshot(run / "model") == before and not leftovers(run)  # the model put back, not thrown away
    crash()
    result = charnn.train(run, resume=True, max_steps=5, quiet=True)
    assert result.steps == 5
    assert load_model(run).info["training"]["steps"] >= 3
    assert not leftovers(run)


def test_without_matplotlib_training_notes_it_once_and_goes_on(tmp_path, corpus):
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from charnn.cli import main\n"
        f"sys.exit(main(['train', '--data', {str(corpus)!r}, '--out', 'run', '--max-steps', '20',"
        f" '--eval-every', '5', *{TINY_FLAGS!r}]))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("loss.png not drawn; install matplotlib") == 1
    assert not (tmp_path / "run" / "loss.png").exists()
    assert (tmp_path / "run" / "model" / "model.safetensors").exists()


def test_a_second_training_into_the_same_run_is_refused_with_the_first_ones_pid(tmp_path, corpus):
    proc = popen_train(tmp_path, "--data", str(corpus), "--max-steps", "100000", *TINY_FLAGS)
    try:
        wait_for_step(proc, 2)
        for args in (["--resume"], ["--data", str(corpus), "--overwrite", *TINY_FLAGS]):
            result = run_cli("train", "--out", "run", *args, cwd=tmp_path)
            assert_clean_error(result, f"pid {proc.pid}", "another charnn training")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert run_cli("train", "--out", "run", "--resume", "--max-steps", "1", cwd=tmp_path).returncode == 0


def test_a_read_only_cache_only_costs_time(tmp_path, corpus, monkeypatch):
    """The cache (kernel checks, the copy probe's index) is for speed: a read-only one never stops a run."""
    with tmpfs(tmp_path / "cache", 1024) as cache:
        subprocess.run(["mount", "-o", "remount,ro", str(cache)], check=True)
        monkeypatch.setenv("CHARNN_CACHE_DIR", str(cache))
        flags = [*TINY_FLAGS, "--precision", "auto", "--lstm-kernel", "auto", "--eval-every", "3"]
        result = run_cli(
            "train", "--data", str(corpus), "--out", str(tmp_path / "run"), "--max-steps", "6", *flags
        )
        assert result.returncode == 0, result.stderr
        assert RunDir(tmp_path / "run").checkpoints()[-1].name == "step-000000006"
        copying = run_cli("copying", str(tmp_path / "run"), "--samples", "1", "--length", "40")
        assert copying.returncode == 0, copying.stderr


# `charnn ARGS` in a process that sends itself SIGTERM as the run's last step begins.
SIGNAL_IN_THE_LAST_STEP = """
import os, signal, sys
from charnn.cli import main
from charnn.training.loop import Loop
one_step = Loop._one_step
def step(self, epoch, index):
    if self.progress.step == self.step_limit - 1:
        os.kill(os.getpid(), signal.SIGTERM)
    return one_step(self, epoch, index)
Loop._one_step = step
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_in_the_last_step_stops_the_run_before_its_weight_check(tmp_path, corpus):
    args = ["train", "--out", "run", "--quiet", "--data", str(corpus), "--max-steps", "3", *TINY_FLAGS]
    cmd = [sys.executable, "-c", SIGNAL_IN_THE_LAST_STEP, *args]
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert_clean_error(result, "stopped by SIGTERM at step 3", "--resume", code=143)
    assert "inference" not in load_model(tmp_path / "run").info  # it went on to the check before
    finished = run_cli("train", "--out", "run", "--resume", "--quiet", cwd=tmp_path)
    assert finished.returncode == 0, finished.stderr
    assert "val_loss" in load_model(tmp_path / "run").info["inference"]
