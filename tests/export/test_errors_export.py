"""Bad input to `charnn export`: one clear line each, nothing written where it should not be."""

from __future__ import annotations

import os
import shutil

import pytest

from charnn.config import ModelConfig
from charnn.export.folder import WEB_WARN_BYTES, ort_web_available
from charnn.nn.model import CharRNN
from charnn.store.model_dir import save_model
from charnn.text.vocab import Vocab
from conftest import assert_clean_error, read_only_folder, run_cli

pytest.importorskip("onnx", reason="the export extra is not installed (pip install 'charnn[export]')")
ORT_WEB = ort_web_available()


def test_a_run_with_no_model_yet(tmp_path, corpus_file):
    run = tmp_path / "run"
    run.mkdir()
    (run / "train_args.json").write_text("{}", encoding="utf-8")
    result = run_cli("export", str(run), "--out", str(tmp_path / "out"))
    assert_clean_error(result, str(run), "no model yet")
    assert not (tmp_path / "out").exists()


def test_out_is_required(model_run):
    assert_clean_error(run_cli("export", str(model_run)), "--out is required")


def test_a_non_empty_out_is_refused_unless_force(model_run, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    assert_clean_error(run_cli("export", str(model_run), "--out", str(out)), "not empty", "--force")
    assert (out / "notes.txt").read_text(encoding="utf-8") == "mine"
    result = run_cli("export", str(model_run), "--out", str(out), "--force")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["charnn.json", "model.onnx", "vocab.json"]


@pytest.mark.parametrize(
    ("target", "what"),
    [
        ("run", "the model being exported"),
        ("run/model", "the model being exported"),
        (".", "the model being exported"),
        ("here", "the current folder"),
        ("here/..", "the model being exported"),
    ],
)
def test_force_never_replaces_the_model_being_exported_or_the_current_folder(
    model_run, tmp_path, target, what
):
    run = shutil.copytree(model_run, tmp_path / "run")
    (tmp_path / "here" / "mine").mkdir(parents=True)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    cwd = tmp_path / "here" / "mine" if target == "here" else tmp_path
    for model in (run, run / "model"):
        result = run_cli("export", str(model), "--out", str(tmp_path / target), "--force", cwd=cwd)
        assert_clean_error(result, "--out holds " + what, "a folder of its own")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert (run / "model" / "model.safetensors").exists()


def test_force_replaces_a_link_given_as_out_and_leaves_what_it_pointed_at(model_run, tmp_path):
    target = tmp_path / "kept"
    target.mkdir()
    (target / "notes.txt").write_text("mine", encoding="utf-8")
    (tmp_path / "link").symlink_to(target)
    result = run_cli("export", str(model_run), "--out", str(tmp_path / "link"), "--force")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "link" / "model.onnx").exists() and not (tmp_path / "link").is_symlink()
    assert (target / "notes.txt").read_text(encoding="utf-8") == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept", "link"]  # nothing left beside them


def test_an_unwritable_out(model_run, tmp_path):
    with read_only_folder(tmp_path) as disk:
        result = run_cli("export", str(model_run), "--out", str(disk / "out"))
    assert_clean_error(result, "cannot write", "Read-only file system")


def test_an_out_that_is_a_file(model_run, tmp_path):
    out = tmp_path / "file.txt"
    out.write_text("x", encoding="utf-8")
    assert_clean_error(run_cli("export", str(model_run), "--out", str(out)), "is a file")


def test_an_out_inside_a_file(model_run, tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x", encoding="utf-8")
    assert_clean_error(run_cli("export", str(model_run), "--out", str(blocker / "out")), "cannot write")


def test_web_without_onnxruntime_web_files(model_run, tmp_path):
    env_dir = tmp_path / "empty-dist"
    env_dir.mkdir()
    os.environ["CHARNN_ORT_WEB"] = str(env_dir)
    try:
        result = run_cli("export", str(model_run), "--format", "web", "--out", str(tmp_path / "web"))
    finally:
        del os.environ["CHARNN_ORT_WEB"]
    assert_clean_error(result, "onnxruntime-web", "scripts/web_deps.sh", "CHARNN_ORT_WEB")
    assert not (tmp_path / "web").exists()


@pytest.mark.skipif(
    not ORT_WEB, reason="onnxruntime-web is not installed from npm (bash scripts/web_deps.sh)"
)
def test_a_model_too_large_for_a_browser_tab_is_exported_with_a_warning(tmp_path):
    # One LSTM layer of 2048 units: about 64 MB of fp32 weights, above the page's warning size.
    vocab = Vocab(tuple("\nabc"))
    config = ModelConfig(vocab_size=4, cell="lstm", embedding=8, hidden=2048, layers=1)
    model = CharRNN(config, init=False)
    for p in model.parameters():
        p.data.fill_(0.01)
    save_model(tmp_path / "big", model, vocab, {"data": "none"})
    result = run_cli("export", str(tmp_path / "big"), "--format", "web", "--out", str(tmp_path / "web"))
    assert result.returncode == 0, result.stderr
    warning, summary = result.stderr.strip().splitlines()
    assert WEB_WARN_BYTES < 64 * 2**20
    assert warning.startswith("charnn: warning: model.onnx is 64."), warning
    assert summary.startswith("exported") and (tmp_path / "web" / "index.html").exists()
