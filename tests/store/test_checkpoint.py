"""Checkpoints: optimizer state through safetensors and JSON, loop tensors, damage detected."""

import json

import pytest
import torch

from charnn.config import ModelConfig
from charnn.errors import ModelFileError
from charnn.nn.model import CharRNN
from charnn.store.checkpoint import (
    load_checkpoint,
    optimizer_from_tensors,
    optimizer_to_tensors,
    save_checkpoint,
)


def tiny_model() -> CharRNN:
    torch.manual_seed(0)
    return CharRNN(ModelConfig(vocab_size=10, hidden=12, embedding=6))


def test_adam_state_round_trips_through_safetensors():
    model = tiny_model()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    model(torch.tensor([[1, 2, 3]]))[0].sum().backward()
    opt.step()
    tensors, meta = optimizer_to_tensors(opt)
    json.dumps(meta)  # everything that is not a tensor is plain JSON
    restored = torch.optim.Adam(tiny_model().parameters(), lr=0.5)
    restored.load_state_dict(optimizer_from_tensors(tensors, meta))
    assert restored.param_groups[0]["lr"] == 0.01
    assert restored.param_groups[0]["betas"] == (0.9, 0.999)
    for idx, state in opt.state_dict()["state"].items():
        for key, value in state.items():
            assert torch.equal(restored.state_dict()["state"][idx][key], value)


def test_checkpoint_round_trips_and_detects_damage(tmp_path):
    model = tiny_model()
    opt = torch.optim.Adam(model.parameters())
    path = save_checkpoint(tmp_path, 7, model, opt, {"epoch": 0}, {"carry.0": torch.ones(1, 2, 3)})
    assert path.name == "step-000000007"
    ckpt = load_checkpoint(path)
    assert ckpt.state["step"] == 7 and ckpt.state["epoch"] == 0
    assert torch.equal(ckpt.loop_tensors["carry.0"], torch.ones(1, 2, 3))
    (path / "optimizer.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelFileError, match="optimizer.safetensors"):
        load_checkpoint(path)
