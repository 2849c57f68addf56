"""Run folders that cannot be used as asked, through the real CLI (disk full and locks: test_resilience)."""

import pytest

from conftest import TINY_FLAGS, assert_clean_error, read_only_folder, run_cli


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("All:\nSpeak, speak.\n" * 200)
    return path


def train(corpus, out, *extra):
    return run_cli(
        "train", "--data", str(corpus), "--out", str(out), "--max-steps", "2", "--quiet", *TINY_FLAGS, *extra
    )


def test_existing_run_needs_resume_or_overwrite(tmp_path, corpus):
    assert train(corpus, tmp_path / "run").returncode == 0
    before = (tmp_path / "run/model/model.safetensors").read_bytes()
    assert_clean_error(train(corpus, tmp_path / "run"), "already holds a run", "--resume", "--overwrite")
    assert (tmp_path / "run/model/model.safetensors").read_bytes() == before
    assert train(corpus, tmp_path / "run", "--overwrite", "--seed", "3").returncode == 0
    assert (tmp_path / "run/model/model.safetensors").read_bytes() != before


def test_out_that_cannot_be_a_folder(tmp_path, corpus):
    (tmp_path / "afile").write_text("x")
    assert_clean_error(train(corpus, tmp_path / "afile"), "afile", "not a folder")
    assert_clean_error(train(corpus, tmp_path / "afile" / "run"), "cannot create the run folder")
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    assert_clean_error(train(corpus, tmp_path / "dangling"), "a symbolic link to", "gone", "does not exist")
    too_long = tmp_path / ("r" * 300)
    assert_clean_error(train(corpus, too_long), "cannot create the run folder (File name too long)")


def test_resume_without_a_run(tmp_path):
    assert_clean_error(run_cli("train", "--out", str(tmp_path / "nothing"), "--resume"), "no run to resume")
    # without --out, "drop --resume" was the advice, and that starts the tutorial's 10 epochs
    no_out = run_cli("train", "--resume", "--max-steps", "10", cwd=tmp_path)
    assert_clean_error(no_out, "--resume needs --out RUN")
    assert not (tmp_path / "runs").exists()


def test_unwritable_output_folder(tmp_path, corpus):
    with read_only_folder(tmp_path) as disk:
        assert_clean_error(
            train(corpus, disk / "run"), "cannot create the run folder", "Read-only file system"
        )
        assert_clean_error(train(corpus, disk), "not writable")


def test_a_bad_lstm_kernel_choice_is_refused_and_the_run_kept(tmp_path, corpus, monkeypatch):
    assert train(corpus, tmp_path / "run").returncode == 0
    before = (tmp_path / "run/model/model.safetensors").read_bytes()
    resumed = run_cli("train", "--out", str(tmp_path / "run"), "--resume", "--lstm-kernel", "fast")
    assert resumed.returncode == 2 and "invalid choice: 'fast'" in resumed.stderr
    monkeypatch.setenv("CHARNN_LSTM_KERNEL", "fast")
    assert_clean_error(train(corpus, tmp_path / "new"), "CHARNN_LSTM_KERNEL", "got 'fast'")
    assert not (tmp_path / "new").exists()
    assert (tmp_path / "run/model/model.safetensors").read_bytes() == before
    # The variable only sets the default of new runs: a resumed run keeps the setting it was started with.
    resumed = run_cli("train", "--out", str(tmp_path / "run"), "--resume", "--max-steps", "4", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
