"""The hand-written CPU LSTM used for bf16 training, against PyTorch's fused fp32 LSTM; its time steps
compiled (nn/native.py) and as PyTorch operations."""

import functools
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

from charnn.config import ModelConfig
from charnn.nn import cpu_lstm, native
from charnn.nn.model import CharRNN

COMPILER = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def random_lstm(layers: int, embed: int, hidden: int) -> list[torch.Tensor]:
    return cpu_lstm.random_weights(embed, hidden, layers, torch.Generator().manual_seed(0), bias_scale=0.5)


def outputs_and_grads(run, x, state, weights, dtype):
    """Run an LSTM in `dtype` from fp32 values; its outputs, then the gradients of a loss reaching the outputs
    and the last state, for the input, the initial state and every weight, all in fp32."""
    leaves = [t.detach().to(dtype).requires_grad_() for t in (x, *state, *weights)]
    x_, h0, c0, *w = leaves
    out, (h_n, c_n) = run(x_, (h0, c0), w)
    gen = torch.Generator().manual_seed(1)
    probes = [torch.randn(t.shape, generator=gen) for t in (out, h_n, c_n)]
    loss = sum((t.float() * p).sum() for t, p in zip((out, h_n, c_n), probes, strict=True))
    loss.backward()
    return [t.detach().float() for t in (out, h_n, c_n)], [t.grad.float() for t in leaves]


def fused(x, state, weights):
    out, h_n, c_n = torch.lstm(x, state, weights, True, len(weights) // 4, 0.0, True, False, True)
    return out, (h_n, c_n)


def hand_written(x, state, weights):
    return cpu_lstm.lstm(x, state, weights, 0.0, True)


def inputs(batch, steps, embed, hidden, layers):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(batch, steps, embed, generator=gen)
    state = tuple(torch.randn(layers, batch, hidden, generator=gen) * 0.5 for _ in range(2))
    return x, state


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("steps", [1, 5, 37])  # one step, fewer than a chunk, several chunks and a remainder
def test_fp32_arithmetic_equals_the_fused_kernel(layers, steps):
    x, state = inputs(3, steps, 7, 16, layers)
    weights = random_lstm(layers, 7, 16)
    ref_out, ref_grads = outputs_and_grads(fused, x, state, weights, torch.float32)
    out, grads = outputs_and_grads(hand_written, x, state, weights, torch.float32)
    out_diff = max(float((a - b).abs().max()) for a, b in zip(out, ref_out, strict=True))
    # gradients sum over batch and steps: their rounding grows with their size, so compare relative to it
    grad_diff = max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(grads, ref_grads, strict=True))
    print(
        f"fp32, {layers} layers x {steps} steps: outputs max abs diff {out_diff:.1e}, grads {grad_diff:.1e}",
    )
    assert out_diff < 1e-5 and grad_diff < 1e-5


@pytest.mark.parametrize("compiled_steps", [True, False])
@pytest.mark.parametrize("layers", [1, 2])
def test_bf16_gradients_are_as_close_to_fp32_as_the_fused_bf16_kernels(layers, compiled_steps):
    x, state = inputs(8, 40, 32, 64, layers)
    weights = random_lstm(layers, 32, 64)
    _, exact = outputs_and_grads(fused, x, state, weights, torch.float32)
    errors = {}
    hand = functools.partial(cpu_lstm.lstm, dropout=0.0, training=True, compiled_steps=compiled_steps)
    for name, run in (("fused", fused), ("hand", hand)):
        _, grads = outputs_and_grads(run, x, state, weights, torch.bfloat16)
        errors[name] = max(float((g - e).norm() / e.norm()) for g, e in zip(grads, exact, strict=True))
    print(f"bf16 vs fp32, worst gradient error: fused {errors['fused']:.2e}, charnn {errors['hand']:.2e}")
    assert errors["hand"] < 0.02
    assert errors["hand"] < 2 * errors["fused"]


def test_dropout_between_layers_is_seeded_and_only_in_training():
    x, state = inputs(4, 9, 8, 16, 2)
    weights = [w.bfloat16() for w in random_lstm(2, 8, 16)]
    x, state = x.bfloat16(), tuple(s.bfloat16() for s in state)
    runs = []
    settings = ((0.5, True, 0), (0.5, True, 0), (0.5, True, 1), (0.5, False, 0), (0.0, True, 0))
    for p, training, seed in settings:
        torch.manual_seed(seed)
        runs.append(cpu_lstm.lstm(x, state, weights, p, training)[0])
    assert torch.equal(runs[0], runs[1])  # same seed, same masks
    assert not torch.equal(runs[0], runs[2])
    assert torch.equal(runs[3], runs[4])  # no dropout outside training


def test_the_model_runs_given_training_layers_only_while_recording_gradients():
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=11, embedding=8, hidden=16, layers=2)).to(torch.bfloat16)
    emb = model.embedding(torch.randint(0, 11, (3, 12)))
    state = model.init_state(3)
    weights = model.rnn.flat_weights()
    mine, _ = cpu_lstm.lstm(emb, state, weights, model.rnn.dropout, True)
    theirs, _ = fused(emb, state, weights)
    assert not torch.equal(mine, theirs)  # bf16 rounding differs, so equality below tells the kernels apart
    assert torch.equal(model.rnn(emb, state)[0], theirs)
    model.rnn.training_layers = cpu_lstm.lstm
    assert torch.equal(model.rnn(emb, state)[0], mine)
    with torch.no_grad():
        assert torch.equal(model.rnn(emb, state)[0], theirs)


@pytest.mark.skipif(
    native.compiled()[0] is None or not native.compiled()[0].amx,
    reason="this CPU has no AMX units (or the OS does not grant them)",
)
@pytest.mark.parametrize(("batch", "layers"), [(16, 1), (80, 2)])
def test_the_layer_on_amx_computes_what_it_does_a_step_at_a_time(batch, layers, monkeypatch):
    steps = native.compiled()[0]
    calls = []
    loop = steps.forward_loop
    monkeypatch.setattr(steps, "forward_loop", lambda *a: calls.append(1) or loop(*a))
    x, state = inputs(batch, 37, 32, 64, layers)
    weights = random_lstm(layers, 32, 64)
    on_amx = outputs_and_grads(hand_written, x, state, weights, torch.bfloat16)
    assert len(calls) == layers  # the sizes fit the tiles: every layer ran its loop on the units
    monkeypatch.setattr(steps, "amx", False)
    stepwise = outputs_and_grads(hand_written, x, state, weights, torch.bfloat16)
    assert len(calls) == layers
    for a, b in zip([*on_amx[0], *on_amx[1]], [*stepwise[0], *stepwise[1]], strict=True):
        # bf16 rounding of sums made in another order: a few bf16 steps apart, not more
        assert float((a - b).norm() / b.norm()) < 0.01


def test_buffers_reused_across_steps_give_what_fresh_ones_give():
    x, state = inputs(4, 20, 8, 16, 2)
    weights = [w.bfloat16() for w in random_lstm(2, 8, 16)]
    pool = cpu_lstm.BufferPool()

    def pooled(x, state, weights):
        return cpu_lstm.lstm(x, state, weights, 0.0, True, pool)

    fresh = outputs_and_grads(hand_written, x, state, weights, torch.bfloat16)
    for _ in range(3):
        reused = outputs_and_grads(pooled, x, state, weights, torch.bfloat16)
        assert pool.free  # handed back after the backward, taken again by the next step
        for a, b in zip([*fresh[0], *fresh[1]], [*reused[0], *reused[1]], strict=True):
            assert torch.equal(a, b)


def test_the_compiled_steps_build_here_and_compute_what_the_pytorch_steps_compute():
    if COMPILER is None:
        pytest.skip("no C compiler on this machine: the layer runs its PyTorch steps (tested above)")
    steps, why = native.compiled()
    assert steps is not None, why
    for batch, length in ((1, 1), (5, 3), (16, 37)):  # one row and one step; odd sizes; several rows
        x, state = inputs(batch, length, 24, 40, 2)
        weights = random_lstm(2, 24, 40)
        runs = [
            outputs_and_grads(functools.partial(cpu_lstm.lstm, dropout=0.0, training=True, compiled_steps=c),
                              x, state, weights, torch.bfloat16)
            for c in (True, False)
        ]  # fmt: skip
        (out, grads), (ref_out, ref_grads) = runs
        for a, b in zip([*out, *grads], [*ref_out, *ref_grads], strict=True):
            # bf16 rounding of sums made in another order: a few bf16 steps apart, not more
            assert float((a - b).norm() / b.norm()) < 0.01, (batch, length)


def test_the_compiled_transpose_moves_every_element_exactly():
    if COMPILER is None:
        pytest.skip("no C compiler on this machine: the layer transposes with PyTorch")
    steps, why = native.compiled()
    assert steps is not None, why
    gen = torch.Generator().manual_seed(3)
    for rows, cols in ((1, 1), (1, 70), (33, 1), (32, 32), (33, 70), (200, 96)):  # partial and whole tiles
        x = torch.randn(rows, cols + 5, generator=gen).bfloat16()
        for matrix in (x[:, :cols].contiguous(), x[:, 5:], x[:, :cols].t()):  # dense, rows apart, transposed
            out = steps.transposed(matrix)
            assert out.is_contiguous() and torch.equal(out, matrix.t()), (rows, cols)


@pytest.mark.parametrize("compiled_steps", [True, False])
def test_weight_gradients_come_in_the_weights_layout(compiled_steps):
    """So autograd keeps them as they are instead of copying each into the weight's layout (its copy of a
    transposed view is the slow part); `autograd.grad` hands them over as the layer made them."""
    x, state = inputs(4, 6, 24, 40, 2)
    weights = [w.bfloat16().requires_grad_() for w in random_lstm(2, 24, 40)]
    bf16_state = tuple(s.bfloat16() for s in state)
    out, _ = cpu_lstm.lstm(x.bfloat16(), bf16_state, weights, 0.0, True, compiled_steps=compiled_steps)
    grads = torch.autograd.grad(out.float().sum(), weights)
    assert all(g.is_contiguous() and g.shape == w.shape for g, w in zip(grads, weights, strict=True))


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


LAYER_RUN = """
    import torch
    from charnn.nn import cpu_lstm, native
    steps, why = native.compiled()
    weights = [w.bfloat16() for w in cpu_lstm.random_weights(8, 16, 1, torch.Generator().manual_seed(0))]
    state = (torch.zeros(1, 2, 16, dtype=torch.bfloat16),) * 2
    out, _ = cpu_lstm.lstm(torch.ones(2, 5, 8, dtype=torch.bfloat16), state, weights, 0.0, True)
    print(steps is not None, why, bool(out.float().isfinite().all()), sep="|")
"""


def test_without_a_c_compiler_the_layer_says_why_and_runs_its_pytorch_steps(tmp_path):
    done = run_python(LAYER_RUN, PATH=str(tmp_path), CHARNN_CACHE_DIR=str(tmp_path / "cache"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False|no C compiler found (cc, gcc or clang)|True"
    assert not (tmp_path / "cache" / "native").exists()


def test_the_build_is_kept_in_the_cache_folder_and_reused(tmp_path):
    if COMPILER is None:
        pytest.skip("no C compiler on this machine")
    cache = tmp_path / "cache"
    first = run_python(LAYER_RUN, CHARNN_CACHE_DIR=str(cache))
    assert first.stdout.strip() == "True||True", first.stderr
    (built,) = (cache / "native").iterdir()
    stamp = built.stat().st_mtime_ns
    second = run_python(LAYER_RUN, CHARNN_CACHE_DIR=str(cache))
    assert second.stdout.strip() == "True||True", second.stderr
    assert [p.name for p in (cache / "native").iterdir()] == [built.name]
    assert built.stat().st_mtime_ns == stamp  # loaded, not built again


def test_a_failing_c_build_is_said_in_one_line_and_the_layer_still_trains(tmp_path):
    compiler = tmp_path / "bin" / "cc"
    compiler.parent.mkdir()
    compiler.write_text(
        "#!/bin/sh\necho 'cc: note: starting' >&2\necho 'cc: error: no such target' >&2\nexit 1\n"
    )
    compiler.chmod(0o755)
    done = run_python(LAYER_RUN, PATH=str(compiler.parent), CHARNN_CACHE_DIR=str(tmp_path / "cache"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False|the C build failed (cc: error: no such target)|True"
