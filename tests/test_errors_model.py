"""Missing, broken, tampered or foreign model folders, through the real CLI."""

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import assert_clean_error, run_cli


@pytest.fixture
def model(model_run, tmp_path) -> Path:
    """A fresh copy of a good model folder, free to break."""
    copy = tmp_path / "model"
    shutil.copytree(model_run / "model", copy)
    return copy


def edit_config(model: Path, change) -> None:
    config = json.loads((model / "config.json").read_text())
    change(config)
    (model / "config.json").write_text(json.dumps(config))


def rehash(model: Path) -> None:
    """Record the weights' current sha256, as if saved that way."""
    digest = hashlib.sha256((model / "model.safetensors").read_bytes()).hexdigest()
    edit_config(model, lambda c: c.update(weights_sha256=digest))


def test_paths_that_are_not_models(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    assert_clean_error(run_cli("generate", str(tmp_path / "none")), "none", "no such run or model folder")
    assert_clean_error(
        run_cli("generate", str(tmp_path / "file.txt")), "file.txt", "not a charnn run or model"
    )
    assert_clean_error(run_cli("info", str(tmp_path / "empty")), "empty", "not a charnn run or model")


@pytest.mark.parametrize(
    ("damage", "needles"),
    [
        (lambda m: (m / "config.json").unlink(), ["config.json", "missing"]),
        (lambda m: (m / "config.json").write_text("{not json"), ["config.json", "cannot be read as JSON"]),
        (lambda m: (m / "config.json").write_text("[1, 2]"), ["config.json", "expected a JSON object"]),
        (lambda m: edit_config(m, lambda c: c["model"].update(heads=4)), ["unknown model settings: heads"]),
        (lambda m: edit_config(m, lambda c: c["model"].update(hidden="big")), ["hidden must be an integer"]),
        (lambda m: edit_config(m, lambda c: c.update(format_version=99)), ["newer charnn", "upgrade"]),
        (lambda m: edit_config(m, lambda c: c.pop("weights_sha256")), ["no weights_sha256", "--no-verify"]),
        (lambda m: (m / "vocab.json").unlink(), ["vocab.json", "cannot be read"]),
        (
            lambda m: (m / "vocab.json").write_text('{"chars": ["a", "b"]}'),
            ["vocab.json", "holds 2 characters"],
        ),
        (lambda m: (m / "model.safetensors").unlink(), ["model.safetensors", "missing"]),
        (lambda m: edit_config(m, lambda c: c.update(training="oops")), ["'training' must be a JSON object"]),
    ],
)
def test_broken_model_folders(model, damage, needles):
    damage(model)
    for command in ("generate", "info", "evaluate"):
        assert_clean_error(run_cli(command, str(model)), *needles)


def test_truncated_weights(model):
    path = model / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-50])
    assert_clean_error(run_cli("generate", str(model)), "sha256 does not match", "--no-verify")
    rehash(model)
    assert_clean_error(run_cli("generate", str(model)), "not a readable safetensors file")


def test_tampered_weights_are_refused_unless_no_verify(model):
    tensors = load_file(str(model / "model.safetensors"))
    tensors["head.bias"] += 1.0
    save_file(tensors, str(model / "model.safetensors"))
    assert_clean_error(run_cli("generate", str(model)), "sha256 does not match", "--no-verify")
    result = run_cli("generate", str(model), "--no-verify", "--length", "5", "--seed", "1")
    assert result.returncode == 0 and len(result.stdout) == 6


def test_weights_of_the_wrong_shape_or_dtype(model):
    edit_config(model, lambda c: c["model"].update(hidden=33))
    assert_clean_error(run_cli("generate", str(model)), "head.weight has shape (34, 32)", "needs (34, 33)")
    edit_config(model, lambda c: c["model"].update(hidden=32))
    tensors = load_file(str(model / "model.safetensors"))
    save_file({k: v.to(torch.float16) for k, v in tensors.items()}, str(model / "model.safetensors"))
    rehash(model)
    assert_clean_error(run_cli("generate", str(model)), "float16", "expected torch.float32")
    tensors["extra.weight"] = torch.zeros(2)
    save_file(tensors, str(model / "model.safetensors"))
    rehash(model)
    assert_clean_error(run_cli("generate", str(model)), "unexpected extra.weight")


def test_no_code_path_unpickles():
    src = Path(__file__).resolve().parents[1] / "src"
    unsafe = re.compile(
        r"\bimport (c?pickle|dill|joblib)|\bfrom (c?pickle|dill|joblib) |torch\.(load|save)\(|np\.load\("
    )
    for path in src.rglob("*.py"):
        assert not unsafe.search(path.read_text()), path


def test_evaluate_when_the_training_text_has_moved(model_run, tmp_path):
    shutil.copytree(model_run, tmp_path / "run")
    edit_config(tmp_path / "run" / "model", lambda c: c["training"].update(data=str(tmp_path / "gone.txt")))
    assert_clean_error(run_cli("evaluate", str(tmp_path / "run")), "gone.txt", "no longer there", "--data")


def test_damaged_checkpoint_state_is_named_when_resuming(model_run, tmp_path):
    shutil.copytree(model_run, tmp_path / "run")
    newest = sorted((tmp_path / "run" / "checkpoints").iterdir())[-1]
    state = json.loads((newest / "state.json").read_text())
    del state["rng"]
    (newest / "state.json").write_text(json.dumps(state))
    result = run_cli("train", "--out", str(tmp_path / "run"), "--resume", "--max-steps", "9")
    assert_clean_error(result, "state.json: damaged", "delete this checkpoint folder")
