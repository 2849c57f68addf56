"""The public Python API: names exported from `charnn`, and that importing it stays light."""

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import charnn
from charnn.presets import resume_settings
from conftest import PARAGRAPH, TINY


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


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(PARAGRAPH * 60, encoding="utf-8")
    return path


def test_train_puts_the_callers_random_generators_back(tmp_path, corpus):
    random.seed(7), np.random.seed(7), torch.manual_seed(7)
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.seed(7), np.random.seed(7), torch.manual_seed(7)
    charnn.train(tmp_path / "run", data=Path(corpus), max_steps=3, quiet=True, **TINY)  # a Path for data
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected


def test_train_checks_its_own_switches_as_the_command_line_does(tmp_path, corpus):
    settings = {"data": str(corpus), "max_steps": 2, **TINY}
    charnn.train(tmp_path / "run", quiet=True, **settings)
    kept = (tmp_path / "run/model/model.safetensors").read_bytes()
    with pytest.raises(charnn.CharnnError, match="--overwrite must be true or false, got 'no'"):
        charnn.train(tmp_path / "run", overwrite="no", quiet=True, **settings)
    with pytest.raises(charnn.CharnnError, match="--resume must be true or false"):
        charnn.train(tmp_path / "run", resume="false", quiet=True)
    with pytest.raises(charnn.CharnnError, match="--out must be given"):
        charnn.train(None, quiet=True, **settings)
    assert (tmp_path / "run/model/model.safetensors").read_bytes() == kept  # the run was not replaced


def test_a_signal_stops_train_with_a_keyboard_interrupt_not_an_exception(tmp_path, corpus):
    ticks = iter(range(10**6))

    def clock() -> float:  # the user presses Ctrl-C during the fifth step
        if next(ticks) == 10:
            os.kill(os.getpid(), signal.SIGINT)
        return time.perf_counter()

    with pytest.raises(charnn.Stopped, match="stopped by SIGINT at step") as stop:
        charnn.train(tmp_path / "run", data=str(corpus), max_steps=50, quiet=True, clock=clock, **TINY)
    assert isinstance(stop.value, KeyboardInterrupt) and not isinstance(stop.value, Exception)


def test_a_model_argument_that_is_not_a_path_is_one_clear_error(trained_run):
    loaded = charnn.load(trained_run)
    assert charnn.load(loaded) is loaded
    not_a_model = "the model must be a run or model folder (a path) or a loaded model, got "
    for call, says in (
        (lambda: charnn.load(None), not_a_model + "a NoneType"),
        (lambda: charnn.generate(None, length=5), not_a_model + "a NoneType"),
        (lambda: charnn.evaluate(3), not_a_model + "an int"),
        (lambda: charnn.load(trained_run, verify="no"), "--no-verify must be true or false, got 'no'"),
    ):
        with pytest.raises(charnn.CharnnError) as raised:
            call()
        assert str(raised.value).startswith(says), (str(raised.value), says)


def test_evaluate_takes_verify_as_the_command_line_does(trained_run, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(trained_run / "model", model)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\x00\x00\x80\x3f")  # the last float becomes 1.0
    with pytest.raises(charnn.CharnnError, match="sha256 does not match"):
        charnn.evaluate(model)
    assert charnn.evaluate(model, verify=False)["chars"] > 0


def test_python_values_a_notebook_holds_are_taken(tmp_path):
    cfg = charnn.TrainConfig(lr=np.float32(0.002), max_steps=np.int64(3), time_budget="2m", data=tmp_path)
    wanted = (float(np.float32(0.002)), 3, 120.0, str(tmp_path))
    assert (cfg.lr, cfg.max_steps, cfg.time_budget, cfg.data) == wanted
    assert type(cfg.max_steps) is int and type(cfg.lr) is float
    with pytest.raises(charnn.CharnnError, match="--time-budget: not a duration"):
        charnn.TrainConfig(time_budget="soon")
    with pytest.raises(charnn.CharnnError, match=r"--init-from must be text, got a SamplingConfig$"):
        charnn.TrainConfig(init_from=charnn.SamplingConfig())  # its type named, not a page of repr
    with pytest.raises(charnn.CharnnError, match="--temperature must be a number"):
        charnn.SamplingConfig(greedy=True, temperature="hot")  # greedy ignores the value, not its kind


def test_sampling_and_evaluating_leave_the_model_in_the_mode_it_was_in(trained_run):
    loaded = charnn.load(trained_run)
    loaded.model.train()
    charnn.generate(loaded, length=5, seed=1)
    assert loaded.model.training
    charnn.evaluate(loaded)
    assert loaded.model.training
    loaded.model.eval()
    charnn.generate(loaded, length=5, seed=1)
    assert not loaded.model.training


def test_every_command_has_its_function(trained_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert charnn.describe(trained_run)["model"]["hidden"] == 32  # charnn info
    looked = charnn.inspect(trained_run, text="All:\nSpeak, speak.", units=2)
    assert len(looked["surprisal"]) == len("All:\nSpeak, speak.") and not (tmp_path / "inspect.html").exists()
    charnn.inspect(trained_run, text="All:", out="page.html")
    assert (tmp_path / "page.html").read_text().startswith("<!doctype html>")
    assert charnn.copying(trained_run, samples=1, length=50)["checked"]
    exported = charnn.export_model(trained_run, out="onnx")
    assert (exported.path / "model.onnx").exists()
    for name in ("serve", "benchmark"):  # each runs for minutes or until stopped: named here, run elsewhere
        assert callable(getattr(charnn, name))
