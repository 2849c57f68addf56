"""The CUDA path (cuDNN LSTM/GRU with autocast). Skipped, with the reason shown, where no GPU is visible."""

import json

import pytest
import torch
from safetensors.torch import load_file

import charnn
from conftest import TINY

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to torch")


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_train_resume_and_generate_on_cuda(tmp_path, corpus_file, precision, cell):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    settings = {**TINY, "precision": precision, "device": "cuda", "cell": cell}
    result = charnn.train(tmp_path / "run", data=str(corpus_file), max_steps=20, quiet=True, **settings)
    assert result.val_loss is not None and result.val_loss < 4.0
    assert charnn.train(tmp_path / "run", resume=True, max_steps=25, quiet=True).steps == 25
    loaded = charnn.load(tmp_path / "run", device="cuda")
    assert loaded.model.device.type == "cuda"
    text = charnn.generate(loaded, "All", 50, seed=1)
    assert text == charnn.generate(loaded, "All", 50, seed=1) and len(text) == 53


def test_cuda_weights_match_cpu_after_loading(trained_run):
    cpu = charnn.load(trained_run)
    gpu = charnn.load(trained_run, device="cuda")
    x = torch.randint(0, cpu.config.vocab_size, (2, 30))
    with torch.no_grad():
        a, _ = cpu.model(x)
        b, _ = gpu.model(x.cuda())
    assert (a - b.cpu()).abs().max() < 1e-4


def test_an_fp16_resume_keeps_the_gradient_scale(tmp_path, corpus_file):
    """fp16 scales the loss; without its scaler's state a resumed run would start again from the initial
    scale (65536) and skip other steps. cuDNN's kernels need not be bit-reproducible: weights are compared
    closely, the scaler's state exactly."""
    settings = {**TINY, "precision": "fp16", "device": "cuda", "data": str(corpus_file), "quiet": True}
    charnn.train(tmp_path / "straight", max_steps=20, **settings)
    charnn.train(tmp_path / "split", max_steps=9, **settings)
    charnn.train(tmp_path / "split", resume=True, max_steps=20, quiet=True)
    step = "checkpoints/step-000000020"
    states = [json.loads((tmp_path / run / step / "state.json").read_text()) for run in ("straight", "split")]
    assert states[0]["grad_scaler"] == states[1]["grad_scaler"] and states[0]["grad_scaler"]["scale"] > 0
    a, b = (load_file(str(tmp_path / run / step / "model.safetensors")) for run in ("straight", "split"))
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-3
