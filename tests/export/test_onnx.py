"""The ONNX step graph against PyTorch fp32: 200 steps of logits and greedy text, per cell and layer count."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import charnn
from charnn.export.folder import export
from charnn.export.runtime import OnnxStepper
from conftest import PARAGRAPH, TINY

pytest.importorskip("onnxruntime", reason="the export extra is not installed (pip install 'charnn[export]')")
CASES = [(cell, layers) for cell in ("lstm", "gru", "rnn") for layers in (1, 2)]
STEPS = 200


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text(PARAGRAPH * 60, encoding="utf-8")
    return path


@pytest.fixture(scope="module", params=CASES, ids=[f"{c}-{n}" for c, n in CASES])
def exported(request, corpus, tmp_path_factory):
    cell, layers = request.param
    root = tmp_path_factory.mktemp(f"{cell}{layers}")
    charnn.train(root / "run", data=str(corpus), cell=cell, layers=layers, max_steps=40, quiet=True, **TINY)
    export(root / "run", out=str(root / "onnx"))
    return root / "run", root / "onnx"


def test_logits_match_pytorch_fp32_over_200_steps(exported):
    run, folder = exported
    loaded = charnn.load(run)
    ids = loaded.vocab.encode((PARAGRAPH * 3)[: STEPS + 1]).reshape(1, -1)
    ids = torch.as_tensor(np.repeat(ids, 3, axis=0)).long()  # a batch of 3: the batch size is dynamic
    with torch.no_grad():
        reference, _ = loaded.model(ids)
    onnx = OnnxStepper(folder)
    state = onnx.zero_state(3)
    worst = 0.0
    for t in range(STEPS):
        logits, state = onnx.step(ids[:, t].numpy(), state)
        expected = reference[:, t].numpy()
        worst = max(worst, float(np.abs(logits - expected).max() / np.abs(expected).max()))
    assert worst < 1e-4, worst


def test_greedy_text_matches_charnn_generate_with_fp32_weights(exported):
    run, folder = exported
    expected = charnn.generate(run, start="All:", length=STEPS, greedy=True, weights="fp32")
    assert OnnxStepper(folder).greedy("All:", STEPS) == expected


def test_charnn_json_says_how_to_drive_the_graph(exported):
    run, folder = exported
    meta = json.loads((folder / "charnn.json").read_text(encoding="utf-8"))
    config = json.loads((run / "model" / "config.json").read_text(encoding="utf-8"))
    assert meta["model"] == config["model"]
    assert meta["val_loss"] == config["training"]["val_loss"]
    states = ["h", "c"] if meta["model"]["cell"] == "lstm" else ["h"]
    assert list(meta["inputs"]) == ["ids", *states]
    assert sorted(p.name for p in folder.iterdir()) == ["charnn.json", "model.onnx", "vocab.json"]


def test_a_model_of_text_without_newlines_gets_a_default_start_it_knows(tmp_path):
    data = tmp_path / "corpus.txt"
    data.write_text("abc cab bca " * 300, encoding="utf-8")
    charnn.train(tmp_path / "run", data=str(data), max_steps=3, quiet=True, **TINY)
    export(tmp_path / "run", out=str(tmp_path / "onnx"))
    meta = json.loads((tmp_path / "onnx" / "charnn.json").read_text(encoding="utf-8"))
    assert meta["default_start"] in " abc"
    assert len(OnnxStepper(tmp_path / "onnx").greedy("", 20)) == 20  # it raised KeyError on "\n"
