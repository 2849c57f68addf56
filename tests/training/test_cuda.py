"""The CUDA path (cuDNN LSTM/GRU with autocast). Skipped, with the reason shown, where no GPU is visible."""

import pytest
import torch

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
