"""Missing, broken, tampered or foreign model folders, through the real CLI."""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import charnn
from conftest import PARAGRAPH, TINY, assert_clean_error, run_cli


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
        (lambda m: (m / "vocab.json").unlink(), ["vocab.json: missing"]),
        (
            lambda m: (m / "vocab.json").write_text('{"chars": ["a", "b"]}'),
            ["vocab.json", "holds 2 characters"],
        ),
        (lambda m: (m / "model.safetensors").unlink(), ["model.safetensors", "missing"]),
        (lambda m: edit_config(m, lambda c: c.update(training="oops")), ["'training' must be a JSON object"]),
        (lambda m: edit_config(m, lambda c: c["training"].update(init_from="x")), ["'training.init_from'"]),
        (lambda m: edit_config(m, lambda c: c.pop("model")), ["config.json: 'model' must be a JSON object"]),
        (lambda m: edit_config(m, lambda c: c["training"].update(val_fraction="1")), ["val_fraction' must"]),
        (lambda m: edit_config(m, lambda c: c["training"].update(data=5)), ["'training.data' and"]),
        (lambda m: edit_config(m, lambda c: c["training"].update(encoding="nosuch")), ["'nosuch' is no"]),
        (lambda m: edit_config(m, lambda c: c["model"].pop("hidden")), ["the model settings lack hidden"]),
        (
            lambda m: edit_config(m, lambda c: c["model"].update(hidden="48")),
            ["config.json: model setting hidden must be an integer"],
        ),
        (lambda m: edit_config(m, lambda c: c.update(inference=[1])), ["'inference' must be a JSON object"]),
        (
            lambda m: edit_config(m, lambda c: c.update(inference={"val_loss": {"fp32": "x"}})),
            ["'inference' must be a JSON object mapping val_loss formats to numbers"],
        ),
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
    # every command that reads a model takes the flag its refusal advises
    for command, *flags in (("info",), ("evaluate",), ("inspect", "--text", "the", "--json")):
        assert_clean_error(run_cli(command, str(model), *flags), "sha256 does not match", "--no-verify")
        assert run_cli(command, str(model), *flags, "--no-verify").returncode == 0


def test_a_run_from_tampered_weights_is_refused_with_advice_it_can_follow(model, tmp_path):
    tensors = load_file(str(model / "model.safetensors"))
    tensors["head.bias"] += 1.0
    save_file(tensors, str(model / "model.safetensors"))
    (tmp_path / "text.txt").write_text(PARAGRAPH * 20, encoding="utf-8")
    result = run_cli("train", "--data", str(tmp_path / "text.txt"), "--out", str(tmp_path / "run"),
                     "--init-from", str(model), "--max-steps", "1")  # fmt: skip
    assert_clean_error(result, "sha256 does not match", "copy the model again")
    assert "--no-verify" not in result.stderr  # train has no such flag


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


def test_evaluate_and_copying_refuse_a_training_text_changed_since_training(tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text(PARAGRAPH * 30, encoding="utf-8")
    charnn.train(tmp_path / "run", data=str(text), max_steps=3, quiet=True, **TINY)
    with open(text, "a", encoding="utf-8") as f:
        f.write(PARAGRAPH * 10)  # the validation split would now hold text the model trained on
    for command in (["evaluate"], ["copying", "--samples", "1", "--length", "20"]):
        result = run_cli(*command, str(tmp_path / "run"))
        assert_clean_error(result, "corpus.txt", "changed since the model was trained", "--data")
    as_it_is = run_cli("evaluate", str(tmp_path / "run"), "--data", str(text), "--json")
    assert as_it_is.returncode == 0, as_it_is.stderr


def test_damaged_checkpoint_state_is_named_when_resuming(model_run, tmp_path):
    shutil.copytree(model_run, tmp_path / "run")
    newest = sorted((tmp_path / "run" / "checkpoints").iterdir())[-1]
    state = json.loads((newest / "state.json").read_text())
    del state["rng"]
    (newest / "state.json").write_text(json.dumps(state))
    result = run_cli("train", "--out", str(tmp_path / "run"), "--resume", "--max-steps", "9")
    assert_clean_error(result, "state.json: damaged", "delete this checkpoint folder")


def test_weights_holding_nan_are_refused_by_generate_and_evaluate(model):
    tensors = load_file(str(model / "model.safetensors"))
    tensors["head.bias"][3] = float("nan")
    save_file(tensors, str(model / "model.safetensors"))
    rehash(model)
    for command in ("generate", "evaluate"):  # evaluate once printed nan (and NaN, not JSON) and exit 0
        assert_clean_error(run_cli(command, str(model)), "not finite numbers", "use another model")
    assert_clean_error(run_cli("evaluate", str(model), "--json"), "not finite numbers")


def test_output_that_cannot_be_written_is_one_line(model, tmp_path):
    with open("/dev/full", "w") as full:  # a full disk under stdout
        cmd = [sys.executable, "-m", "charnn", "info", str(model)]
        result = subprocess.run(cmd, stdout=full, stderr=subprocess.PIPE, text=True)
    assert_clean_error(result, "No space left on device")
    text = tmp_path / "café.txt"  # the report names it: not ASCII
    text.write_text(PARAGRAPH * 5, encoding="utf-8")
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    cmd = [sys.executable, "-m", "charnn", "evaluate", str(model), "--data", str(text)]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert_clean_error(result, "encoding (ascii) cannot write", "PYTHONIOENCODING=utf-8")


def test_a_file_named_like_the_shipped_model_does_not_hide_it(tmp_path):
    (tmp_path / "shakespeare").write_text("a corpus downloaded under that name\n")
    result = run_cli("info", "shakespeare", cwd=tmp_path)
    assert result.returncode == 0 and "GRU" in result.stdout


def test_evaluate_refuses_an_empty_data_path_and_names_skipped_files(model, tmp_path):
    assert_clean_error(run_cli("evaluate", str(model), "--data", ""), "--data is empty")
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "a.txt").write_text(PARAGRAPH * 5, encoding="utf-8")
    (folder / "b.dat").write_bytes(bytes(range(256)) * 4)
    result = run_cli("evaluate", str(model), "--data", str(folder))
    assert result.returncode == 0 and "nats/char" in result.stdout
    warning = f"charnn: warning: {folder / 'b.dat'}: skipped, it looks binary (not text)"
    assert result.stderr.strip() == warning


def test_evaluate_of_a_run_without_a_validation_split_says_what_to_do(tmp_path):
    (tmp_path / "text.txt").write_text(PARAGRAPH * 20, encoding="utf-8")
    flags = ("--hidden", "16", "--embedding", "8", "--seq-len", "16", "--batch-size", "4", "--quiet")
    flags += ("--val-fraction", "0", "--max-steps", "2")
    trained = run_cli("train", "--data", "text.txt", "--out", "run", *flags, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert_clean_error(run_cli("evaluate", "run", cwd=tmp_path), "the val split holds 0 chars", "--split all")
    assert run_cli("evaluate", "run", "--split", "all", cwd=tmp_path).returncode == 0


def test_a_checkpoint_or_an_export_given_as_the_model_is_named_as_what_it_is(trained_run, tmp_path):
    checkpoint = sorted((trained_run / "checkpoints").iterdir())[-1]
    for command in (["info"], ["generate", "--length", "5"], ["train", "--init-from"]):
        result = run_cli(
            *command, str(checkpoint), *(["--out", str(tmp_path / "ft")] * (command[0] == "train"))
        )
        assert_clean_error(result, "a checkpoint of a run, not a model", f"give the run folder {trained_run}")
    export = tmp_path / "exported"
    export.mkdir()
    for name in ("charnn.json", "model.onnx", "vocab.json"):
        (export / name).write_text("{}")
    assert_clean_error(run_cli("info", str(export)), "an export (charnn export), not a model charnn reads")
    assert_clean_error(run_cli("info", ""), "the model's path is empty")
