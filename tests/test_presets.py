"""Every preset trains for a few steps (a smoke test; docs/presets.md has the real runs)."""

import json

import pytest
import torch

import charnn
from charnn.device import cpu_kind
from charnn.presets import CATALOGUE, PRESETS, STOP_SETTINGS, settings_for
from conftest import PARAGRAPH, run_cli


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_each_preset_runs_a_few_steps(tmp_path, name):
    (tmp_path / "corpus.txt").write_text(PARAGRAPH * 600)  # ~100 KB: room for a batch of any preset
    overrides = {"max_steps": 2, "val_fraction": 0.05}  # ~7,000 val chars: each evaluation stays short
    if PRESETS[name].get("device") == "cuda" and not torch.cuda.is_available():
        # the preset's model, a CPU-sized batch; 1,000 val chars, which the final weight check steps through
        # one at a time in three formats with three layers of 1024
        overrides.update(device="cpu", batch_size=4, seq_len=32, val_fraction=0.01)
    result = charnn.train(
        tmp_path / "run", preset=name, data=str(tmp_path / "corpus.txt"), quiet=True, **overrides
    )
    assert result.steps == 2 and result.val_loss is not None
    args = json.loads((tmp_path / "run/train_args.json").read_text())
    assert args["preset"] == name
    for key, value in CATALOGUE[name].settings_on(cpu_kind()).items():  # its variant for this CPU, if any
        if key not in overrides and key not in STOP_SETTINGS:  # max_steps given replaced its stop settings
            assert {**args["model"], **args["train"]}[key] == value, key


def test_presets_are_described_in_help_with_what_they_reached():
    text = run_cli("train", "--help").stdout
    flat = " ".join(text.split())  # the help's lines as one, wherever they wrap
    for name, preset in CATALOGUE.items():
        assert f"  {name} " in text and preset.help in text
        assert preset.measured in flat  # the figure and the machine, or why there is none
        for variant in preset.by_cpu.values():
            assert variant.measured in flat


@pytest.mark.parametrize(
    ("given", "stops"),
    [
        ({"time_budget": 3600.0}, (None, None, 3600.0)),
        ({"epochs": 100}, (100, None, None)),
        ({"max_steps": 7}, (None, 7, None)),
    ],
)
def test_a_stop_setting_given_beside_a_preset_replaces_the_presets_own(given, stops):
    """--preset tiny --time-budget 1h once kept tiny's 2,000 steps, and stopped there."""
    _, cfg = settings_for("tiny", given)
    assert (cfg.epochs, cfg.max_steps, cfg.time_budget) == stops
    _, cfg = settings_for("cpu-5m", given)  # a time budget of its own
    assert (cfg.epochs, cfg.max_steps, cfg.time_budget) == stops
