"""The model shipped inside the package: loads by name, passes its tamper check, its folder is honest."""

from __future__ import annotations

import json
import shutil

import charnn
from charnn.evaluation import loss_carried
from charnn.export.shipped import val_ids
from charnn.store.model_dir import SHIPPED_DIR
from conftest import assert_clean_error, run_cli

FOLDER = SHIPPED_DIR / "shakespeare"


def test_it_is_small_and_records_how_it_was_trained():
    size = sum(p.stat().st_size for p in FOLDER.iterdir())
    assert size <= 5.2e6, size
    training = json.loads((FOLDER / "config.json").read_text(encoding="utf-8"))["training"]
    assert "scripts/train_shipped_model.sh" in training["command"]
    assert len(training["commit"].split("+")[0]) == 40
    assert training["machine"] and training["data"] == "shakespeare"
    assert training["stored_weights"] in ("bf16", "fp32")
    assert training["val_loss"] - training["val_loss_fp32"] <= 0.01


def test_its_val_loss_is_what_its_folder_claims():
    loaded = charnn.load("shakespeare")  # verify=True: the sha256 of the weights matches config.json
    assert loaded.path == FOLDER
    measured = loss_carried(loaded.model, val_ids(loaded)).nats
    assert abs(measured - loaded.info["training"]["val_loss"]) < 5e-4, measured


def test_generate_info_and_the_api_by_name():
    result = run_cli("generate", "shakespeare", "--start", "ROMEO: ", "--length", "80", "--seed", "1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ROMEO: ") and len(result.stdout) == len("ROMEO: ") + 81
    text = charnn.generate("shakespeare", start="ROMEO: ", length=80, seed=1)
    assert text == result.stdout[:-1]
    info = run_cli("info", "shakespeare")
    assert (
        info.returncode == 0 and "scripts/train_shipped_model.sh" in info.stdout and "commit" in info.stdout
    )


def test_a_tampered_copy_is_refused(tmp_path):
    copy = tmp_path / "shakespeare"
    shutil.copytree(FOLDER, copy)
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (copy / "model.safetensors").write_bytes(bytes(data))
    assert_clean_error(run_cli("generate", str(copy), "--length", "5"), "sha256 does not match")


def test_a_local_folder_of_that_name_wins(tmp_path, model_run):
    shutil.copytree(model_run, tmp_path / "shakespeare")
    result = run_cli("info", "shakespeare", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["model"]["hidden"] == 32
