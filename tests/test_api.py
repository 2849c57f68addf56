"""The public Python API: names exported from `charnn`, and that importing it stays light."""

import subprocess
import sys

import pytest

import charnn
from charnn.presets import resume_settings


def test_public_names():
    from charnn import ModelConfig, SamplingConfig, TrainConfig, evaluate, generate, load, train  # noqa: F401

    assert callable(charnn.train) and callable(charnn.generate)
    assert charnn.ModelConfig().hidden == 1024 and charnn.TrainConfig().batch_size == 64
    assert set(charnn.PRESETS) >= {"seed", "small"}


def test_import_and_help_do_not_load_torch():
    code = "import sys, charnn, charnn.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_api_round_trip(trained_run):
    loaded = charnn.load(trained_run)
    assert loaded.config.hidden == 32
    text = charnn.generate(loaded, "All", 20, seed=4)
    assert text == charnn.generate(trained_run, "All", 20, seed=4)
    report = charnn.evaluate(loaded)
    assert report["carried"]["nats_per_char"] == loaded.info["training"]["val_loss"]


def test_api_refuses_the_stop_settings_the_command_line_refuses_together(tmp_path):
    with pytest.raises(charnn.CharnnError, match="--epochs and --max-steps cannot be given together"):
        charnn.train(tmp_path / "run", preset="tiny", epochs=1, max_steps=5, quiet=True)
    assert not (tmp_path / "run").exists()  # refused before anything was written
    with pytest.raises(charnn.CharnnError, match="cannot be given together"):  # a resume's too
        resume_settings({"preset": "tiny", "model": {}, "train": {}}, {"epochs": 1, "max_steps": 5})
