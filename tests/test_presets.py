"""Every preset trains for a few steps (a smoke test; docs/presets.md has the real runs)."""

import json

import pytest
import torch

import charnn
from charnn.device import cpu_kind
from charnn.presets import CATALOGUE, PRESETS
from conftest import PARAGRAPH, run_cli


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_each_preset_runs_a_few_steps(tmp_path, name):
    (tmp_path / "corpus.txt").write_text(PARAGRAPH * 600)  # ~100 KB: room for a batch of any preset
    overrides = {"max_steps": 2, "val_fraction": 0.2}
    if PRESETS[name].get("device") == "cuda" and not torch.cuda.is_available():
        overrides.update(device="cpu", batch_size=4, seq_len=32)  # the preset's model, a CPU-sized batch
    result = charnn.train(
        tmp_path / "run", preset=name, data=str(tmp_path / "corpus.txt"), quiet=True, **overrides
    )
    assert result.steps == 2 and result.val_loss is not None
    args = json.loads((tmp_path / "run/train_args.json").read_text())
    assert args["preset"] == name
    for key, value in CATALOGUE[name].settings_on(cpu_kind()).items():  # its variant for this CPU, if any
        if key not in overrides:
            assert {**args["model"], **args["train"]}[key] == value, key


def test_presets_are_described_in_help_with_what_they_reached():
    text = run_cli("train", "--help").stdout
    for name, preset in CATALOGUE.items():
        assert f"  {name} " in text and preset.help in text
        assert preset.measured  # the figure and the machine, or why there is none
