"""A preset may take other settings on one kind of CPU, where they measured better there (docs/presets.md):
`cpu-5m` and `cpu-10m` train an LSTM with more weight decay and their recurrent weights dropped instead of a
GRU on Intel CPUs with AMX, `cpu-10m` a wider one at a higher learning rate."""

import json

import pytest

import charnn
from charnn.device import cpu_kind
from charnn.presets import CATALOGUE, settings_for, variant_note
from charnn.training import run as run_module

SMALL = dict(hidden=32, embedding=8, batch_size=4, seq_len=16, max_steps=2, quiet=True)


@pytest.mark.parametrize("preset", ["cpu-5m", "cpu-10m"])
def test_the_cpu_presets_train_an_lstm_with_more_weight_decay_and_weight_dropout_on_amx_only(preset):
    model, train = settings_for(preset, {}, kind="amx")
    assert (model["cell"], train.weight_decay, model["weight_dropout"]) == ("lstm", 0.3, 0.2)
    for kind in ("", "avx512_bf16", "fp32"):
        model, train = settings_for(preset, {}, kind=kind)
        assert (model["cell"], train.weight_decay, model.get("weight_dropout", 0.0)) == ("gru", 0.01, 0.0)
    # What the user gives wins over the variant, and then there is nothing to say about it.
    assert settings_for(preset, {"cell": "gru"}, kind="amx")[0]["cell"] == "gru"
    assert "cell lstm" not in variant_note(preset, "amx", {"cell": "gru"})
    assert variant_note(preset, "amx", {**CATALOGUE[preset].settings_on("amx"), "cell": "gru"}) == ""
    assert "cell lstm" in variant_note(preset, "amx", {}) and "measured" not in CATALOGUE[preset].help
    assert variant_note(preset, "avx512_bf16", {}) == ""


def test_cpu_10m_on_amx_is_wider_with_more_dropout_and_weight_decay_and_what_is_given_wins():
    model, train = settings_for("cpu-10m", {}, kind="amx")
    assert (model["hidden"], model["dropout"], train.weight_decay, train.lr) == (768, 0.5, 0.3, 4e-3)
    model, train = settings_for("cpu-10m", {}, kind="avx512_bf16")
    assert (model["hidden"], train.weight_decay, train.lr) == (512, 0.01, 3e-3)
    model, train = settings_for("cpu-10m", {"hidden": 512, "lr": 1e-3}, kind="amx")
    assert (model["cell"], model["hidden"], model["dropout"], train.lr) == ("lstm", 512, 0.5, 1e-3)
    assert variant_note("cpu-10m", "amx", {"hidden": 512, "lr": 1e-3}).startswith(
        "preset cpu-10m on this CPU (amx): cell lstm, dropout 0.5, weight_decay 0.3, weight_dropout 0.2, "
        "as on AMX"
    )  # what was given (hidden, lr) is not named


@pytest.mark.parametrize("kind, cell", [("amx", "lstm"), ("avx512_bf16", "gru")])
def test_a_run_takes_the_variant_of_the_cpu_it_runs_on_and_says_so(
    tmp_path, corpus_file, monkeypatch, capsys, kind, cell
):
    monkeypatch.setattr(run_module, "cpu_kind", lambda: kind)  # the flags /proc/cpuinfo would show
    charnn.train(tmp_path / "run", preset="cpu-5m", data=str(corpus_file), **{**SMALL, "quiet": False})
    config = json.loads((tmp_path / "run/model/config.json").read_text())
    assert config["model"]["cell"] == cell
    args = json.loads((tmp_path / "run/train_args.json").read_text())
    assert args["preset"] == "cpu-5m" and args["model"]["cell"] == cell
    said = capsys.readouterr().out
    assert (f"preset cpu-5m on this CPU ({kind}): cell lstm" in said) == (kind == "amx")
    # A resumed run keeps the settings it started with, whatever the CPU it resumes on.
    monkeypatch.setattr(run_module, "cpu_kind", lambda: "amx" if kind != "amx" else "fp32")
    charnn.train(tmp_path / "run", resume=True, max_steps=3, quiet=True)
    assert json.loads((tmp_path / "run/model/config.json").read_text())["model"]["cell"] == cell


def test_this_machine_gets_its_own_kinds_variant(tmp_path, corpus_file):
    charnn.train(tmp_path / "run", preset="cpu-5m", data=str(corpus_file), **SMALL)
    config = json.loads((tmp_path / "run/model/config.json").read_text())
    assert config["model"]["cell"] == ("lstm" if cpu_kind() == "amx" else "gru")


def test_a_run_from_a_model_takes_its_shape_not_the_variant(tmp_path, corpus_file, monkeypatch):
    charnn.train(tmp_path / "base", data=str(corpus_file), cell="gru", **SMALL)
    monkeypatch.setattr(run_module, "cpu_kind", lambda: "amx")
    base = str(tmp_path / "base")
    charnn.train(tmp_path / "on", preset="cpu-5m", data=str(corpus_file), init_from=base, **SMALL)
    assert json.loads((tmp_path / "on/model/config.json").read_text())["model"]["cell"] == "gru"
