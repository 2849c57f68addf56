"""The fast stepping paths against the plain fused model: same numbers in fp32, close in bf16 and int8."""

import json

import pytest
import torch

import charnn
import charnn.nn.stepper
from charnn.config import ModelConfig, SamplingConfig
from charnn.device import cpu_kind
from charnn.errors import ConfigError
from charnn.evaluation import loss_carried
from charnn.nn import native
from charnn.nn.model import CharRNN
from charnn.nn.stepper import StepModel, choose_weights
from charnn.sampling import sample
from charnn.text.corpus import load_corpus
from charnn.text.vocab import Vocab
from conftest import PARAGRAPH, TINY


def random_model(cell: str, layers: int) -> CharRNN:
    torch.manual_seed(1)
    model = CharRNN(ModelConfig(vocab_size=23, cell=cell, embedding=12, hidden=48, layers=layers)).eval()
    with torch.no_grad():
        for p in model.parameters():  # non-zero biases, so every bias path counts
            p.add_(torch.randn_like(p) * 0.1)
    return model


def max_diff(model: CharRNN, weights: str) -> float:
    x = torch.randint(0, 23, (3, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref, ref_state = model(x)
        out, state = StepModel(model, weights)(x)
    diffs = [(out - ref).abs().max()] + [(a - b).abs().max() for a, b in zip(state, ref_state, strict=True)]
    return max(float(d) for d in diffs)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("layers", [1, 2])
def test_fp32_step_path_equals_the_fused_model(cell, layers):
    diff = max_diff(random_model(cell, layers), "fp32")
    print(f"fp32 step vs fused, {cell} x{layers}: max abs diff {diff:.2e}")
    assert diff < 1e-5


@pytest.mark.parametrize("weights", ["bf16", "int8"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_reduced_precision_weights_stay_close(cell, weights):
    diff = max_diff(random_model(cell, 2), weights)
    print(f"{weights} step vs fused fp32, {cell} x2: max abs diff {diff:.2e}")
    assert diff < {"lstm": 0.05, "gru": 0.05, "rnn": 0.5}[cell]  # a random tanh RNN amplifies rounding most


@pytest.mark.skipif(native.compiled()[0] is None, reason="no C compiler here: steps as PyTorch operations")
@pytest.mark.parametrize("weights", ["bf16", "int8"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("layers", [1, 2])
def test_steps_compiled_give_the_pytorch_steps_numbers(cell, layers, weights):
    if weights == "int8" and cpu_kind() == "fp32":
        pytest.skip("int8 steps are compiled only on CPUs with native bf16; this one has none")
    model = random_model(cell, layers)
    steps, plain = StepModel(model, weights), StepModel(model, weights, compiled_steps=False)
    x = torch.randint(0, 23, (64, 30), generator=torch.Generator().manual_seed(0))
    (out, state), (ref, ref_state) = steps(x), plain(x)
    assert not torch.equal(out, ref)  # another path was taken
    # bf16: the same arithmetic but for the activations' last bits, which move the state's bf16 rounding;
    # int8: the compiled product's activations are 16-bit integers (test_int8.py), PyTorch's bf16
    tolerance = 5e-3 if weights == "int8" and cpu_kind() == "amx" else 1e-3
    for a, b in zip([out, *state], [ref, *ref_state], strict=True):
        assert float((a - b).norm() / b.norm()) < tolerance
    for bad in ([23], [-1]):
        with pytest.raises(IndexError):
            steps.step(torch.tensor(bad), steps.init_state(1))
    with pytest.raises(ValueError):
        steps.step(torch.tensor([1, 2]), steps.init_state(3))


@pytest.mark.skipif(native.compiled()[0] is None, reason="no C compiler here: steps as PyTorch operations")
def test_int8_steps_are_compiled_only_where_the_cpu_has_native_bf16():
    # without it (AVX2) int8 generation keeps PyTorch's operations, whose results are recorded there
    compiled_here = StepModel(random_model("lstm", 1), "int8")._steps is not None
    assert compiled_here == (cpu_kind() != "fp32")
    assert StepModel(random_model("rnn", 1), "int8")._steps is None  # no compiled step for a plain RNN


@pytest.mark.skipif(native.compiled()[0] is None, reason="no C compiler here: steps as PyTorch operations")
@pytest.mark.parametrize("kind", ["fp32", "avx512_bf16", "amx"])
def test_int8_weights_take_the_compiled_product_only_where_the_cpu_has_amx(monkeypatch, kind):
    # measured faster there; elsewhere PyTorch's, recorded bit for bit on AVX2
    monkeypatch.setattr(charnn.nn.stepper, "cpu_kind", lambda: kind)
    model = random_model("lstm", 2)
    steps = StepModel(model, "int8")
    h = torch.randn(3, 48)
    weights = model.rnn.flat_weights()
    for product, weight in [(steps.recurrent_mm[0], weights[1]), (steps.input_mm[0], weights[4])]:
        q, scales = charnn.nn.stepper.quantize_int8(weight)
        if kind != "amx":  # PyTorch's (48 inputs: a multiple of 16, no padding)
            expected = torch._weight_int8pack_mm(h.bfloat16(), q, scales.bfloat16())
        else:
            expected = native.compiled()[0].int8_product(h, q, scales)
        assert torch.equal(product(h).float(), expected.float())


@pytest.mark.skipif(native.compiled()[0] is None, reason="no C compiler here: steps as PyTorch operations")
def test_the_compiled_generation_steps_refuse_tensors_they_cannot_read():
    steps = native.compiled()[0]
    table, ids, bias, state = torch.randn(5, 12), torch.tensor([0, 4]), torch.randn(12), torch.randn(2, 4)
    recurrent = torch.randn(2, 12).bfloat16()
    good = [table, ids, recurrent, bias, state]
    i_r, i_z, i_n = table[ids].chunk(3, 1)
    h_r, h_z, h_n = (recurrent.float() + bias).chunk(3, 1)
    n = torch.tanh(i_n + torch.sigmoid(i_r + h_r) * h_n)
    expected = n + torch.sigmoid(i_z + h_z) * (state - n)
    assert torch.allclose(steps.gru_generate_step(*good), expected, atol=1e-6)
    for k, bad in [
        (0, table.double()),
        (1, ids.int()),
        (2, recurrent.float()),
        (2, torch.randn(12, 2).bfloat16().t()),  # not contiguous
        (3, torch.randn(9)),
        (4, torch.randn(3, 4)),  # a state row more than ids
    ]:
        with pytest.raises(ValueError):
            steps.gru_generate_step(*good[:k], bad, *good[k + 1 :])
    with pytest.raises(ValueError):
        steps.lstm_generate_step(torch.randn(5, 16), ids, recurrent, state)  # 3 gates' recurrent part


def test_seeded_sample_is_the_same_on_the_fast_and_reference_paths():
    model = random_model("lstm", 2)
    vocab = Vocab.from_text("abcdefghijklmnopqrstuv\n")
    cfg = SamplingConfig(start="abc", length=300, seed=11, num_samples=2)
    fast = list(sample(model, vocab, cfg, "fp32"))
    reference = list(sample(model, vocab, cfg, None))
    assert fast == reference


def test_loss_with_reduced_weights_matches_fp32_on_a_trained_model(trained_run):
    loaded = charnn.load(trained_run)
    ids = load_corpus(loaded.info["training"]["data"]).ids[:3000]
    reference = loss_carried(loaded.model, ids).nats
    for weights in ("fp32", "bf16", "int8"):
        loss = loss_carried(StepModel(loaded.model, weights), ids).nats
        print(f"{weights}: {loss:.5f} vs fp32 fused {reference:.5f}")
        assert abs(loss - reference) < (1e-5 if weights == "fp32" else 0.01)


def test_training_records_the_weight_checks(trained_run):
    info = json.loads((trained_run / "model/config.json").read_text())["inference"]
    assert set(info["val_loss"]) >= {"fp32", "int8"} and info["val_chars"] > 0
    assert info["val_loss"]["fp32"] == pytest.approx(info["val_loss"]["int8"], abs=0.01)


def test_choose_weights(monkeypatch):
    cpu = torch.device("cpu")
    good = {"fp32": 1.50, "bf16": 1.501, "int8": 1.505}
    monkeypatch.setattr(charnn.nn.stepper, "cpu_kind", lambda: "avx512_bf16")
    assert choose_weights("auto", good, 1, cpu) == "int8"
    assert choose_weights("auto", good, 64, cpu) == "bf16"
    assert choose_weights("auto", {**good, "int8": 1.52}, 1, cpu) == "bf16"  # int8 costs 0.02 nats: not used
    assert choose_weights("auto", {}, 1, cpu) == "fp32"  # never checked: the safe choice
    assert choose_weights("fp32", good, 1, cpu) == "fp32"
    monkeypatch.setattr(charnn.nn.stepper, "cpu_kind", lambda: "fp32")  # AVX2 only: no bf16, int8 at batch 1
    assert choose_weights("auto", good, 1, cpu) == "int8"
    assert choose_weights("auto", good, 64, cpu) == "fp32"
    with pytest.raises(ConfigError, match="no native bf16"):
        choose_weights("bf16", good, 1, cpu)


@pytest.mark.parametrize("width", [8, 24, 100])
@pytest.mark.parametrize("rows", [1, 3])
def test_int8_products_are_right_at_widths_not_a_multiple_of_16(width, rows):
    # PyTorch's int8 product returns garbage at these widths, or crashes the process from 2 rows on
    weight = torch.randn(400, width, generator=torch.Generator().manual_seed(width)) * 0.1
    x = torch.randn(rows, width, generator=torch.Generator().manual_seed(rows))
    out, ref = charnn.nn.stepper._matmul(weight, "int8")(x), x @ weight.t()
    assert float((out - ref).norm() / ref.norm()) < 0.02


def test_a_model_of_100_units_trains_evaluates_and_generates_with_int8_weights(tmp_path):
    # training's last act checks every weight format, int8 too; it crashed at such widths
    data = tmp_path / "corpus.txt"
    data.write_text(PARAGRAPH * 20, encoding="utf-8")
    charnn.train(tmp_path / "run", data=str(data), max_steps=3, quiet=True, **{**TINY, "hidden": 100})
    checks = json.loads((tmp_path / "run" / "model" / "config.json").read_text())["inference"]["val_loss"]
    assert abs(checks["int8"] - checks["fp32"]) < 0.01
    text = charnn.generate(tmp_path / "run", start="A", length=40, weights="int8", seed=1)
    assert len(text) == 41
