"""charnn's bf16 CPU LSTM taking ids and the embedding (nn/cpu_lstm.py's input table) instead of embedded
inputs: the same outputs, gradients as close to fp32 or closer, and a lookup where a table would not pay."""

import pytest
import torch
import torch.nn.functional as F

from charnn.config import ModelConfig
from charnn.nn import cpu_lstm, lookup, native
from charnn.nn.model import CharRNN, layers_get_ids

pytestmark = pytest.mark.skipif(native.compiled()[0] is None, reason="the table needs the compiled steps")

VOCAB, EMBED, HIDDEN, BATCH, STEPS = 40, 24, 48, 6, 150  # 40 x 16 = 640 <= 900 characters: the table pays


def weights_and_inputs(layers: int, vocab: int = VOCAB):
    gen = torch.Generator().manual_seed(3)
    weights = cpu_lstm.random_weights(EMBED, HIDDEN, layers, gen, bias_scale=0.5)
    embedding = torch.randn(vocab, EMBED, generator=gen) * 0.5
    ids = torch.randint(0, vocab, (BATCH, STEPS), generator=gen)
    state = tuple(torch.randn(layers, BATCH, HIDDEN, generator=gen) * 0.5 for _ in range(2))
    probe = torch.randn(BATCH, STEPS, HIDDEN, generator=gen)
    return embedding, weights, ids, state, probe


def run(embedding, weights, ids, state, probe, dtype, how):
    """Outputs, then the gradients of the embedding and of every weight (fp32), computed in `dtype` by
    PyTorch's fused fp32 kernel ("fp32"), by charnn's layer on looked-up rows ("lookup") or on the ids."""
    leaves = [t.detach().to(dtype).requires_grad_() for t in (embedding, *weights)]
    state = tuple(s.to(dtype) for s in state)
    if how == "fp32":
        out = torch.lstm(F.embedding(ids, leaves[0]), state, leaves[1:], True, len(weights) // 4, 0.0, True,
                         False, True)[0]  # fmt: skip
    elif how == "lookup":
        out = cpu_lstm.lstm(lookup.rows(ids, leaves[0]), state, leaves[1:], 0.0, True)[0]
    else:
        out = cpu_lstm.lstm(ids, state, leaves[1:], 0.0, True, embedding=leaves[0])[0]
    (out.float() * probe).sum().backward()
    return out.detach().float(), [t.grad.float() for t in leaves]


def relative_errors(grads, exact):
    return [float((g - e).norm() / e.norm()) for g, e in zip(grads, exact, strict=True)]


@pytest.mark.parametrize("layers", [1, 2])
def test_the_table_gives_the_lookups_outputs_and_gradients_as_close_to_fp32(layers):
    args = weights_and_inputs(layers)
    _, exact = run(*args, torch.float32, "fp32")
    out_lookup, lookup = run(*args, torch.bfloat16, "lookup")
    out_table, table = run(*args, torch.bfloat16, "table")
    assert torch.equal(out_table, out_lookup)
    assert torch.equal(table[2], lookup[2])  # the recurrent weights' gradient: the table does not touch it
    assert not torch.equal(table[0], lookup[0])  # the embedding's gradient: another path, so it was taken
    table_errors, lookup_errors = relative_errors(table, exact), relative_errors(lookup, exact)
    print(f"bf16 vs fp32 gradient errors: table {max(table_errors):.2e}, lookup {max(lookup_errors):.2e}")
    assert max(table_errors) < 0.02
    assert table_errors[0] <= lookup_errors[0]  # the embedding's: from fp32 sums, not from bf16 rows
    assert table_errors[1] <= 1.5 * lookup_errors[1] + 1e-4  # w_ih's: fp32 against bf16 products


def test_a_vocabulary_too_big_for_the_batch_is_looked_up():
    vocab = BATCH * STEPS // cpu_lstm._TABLE_SHARE + 1
    args = weights_and_inputs(1, vocab)
    out_lookup, lookup = run(*args, torch.bfloat16, "lookup")
    out_ids, given_ids = run(*args, torch.bfloat16, "table")
    assert torch.equal(out_ids, out_lookup)
    assert all(torch.equal(a, b) for a, b in zip(given_ids, lookup, strict=True))


def test_the_model_hands_its_ids_to_the_training_layers_unless_its_inputs_drop_out():
    torch.manual_seed(0)
    ids = torch.randint(0, VOCAB, (BATCH, STEPS))
    logits = {}
    for io_dropout in (0.0, 0.3):
        config = ModelConfig(vocab_size=VOCAB, embedding=EMBED, hidden=HIDDEN, io_dropout=io_dropout)
        model = CharRNN(config).to(torch.bfloat16)
        seen = []

        def layers(x, hx, weights, dropout, training, embedding=None, seen=seen):
            seen.append(embedding is not None)
            return cpu_lstm.lstm(x, hx, weights, dropout, training, embedding=embedding)

        model.rnn.training_layers = layers
        torch.manual_seed(1)
        logits[io_dropout] = model(ids)[0]
        assert seen == [io_dropout == 0.0] == [layers_get_ids(config, training=True)]
        assert layers_get_ids(config, training=False)  # in evaluation nothing drops out
        with torch.no_grad():  # the fused kernel, on the looked-up rows, where no gradient is recorded
            model.eval()
            looked_up = model.rnn(model.embedding(ids), model.init_state(BATCH))[0]
            assert torch.equal(model(ids)[0], model.head(looked_up))
        assert seen == [io_dropout == 0.0]


def test_the_kernel_timing_runs_on_ids_where_the_model_hands_them_over(monkeypatch):
    real = cpu_lstm.lstm
    for vocab in (0, 16):  # 16 x 16 <= 6 x 50 characters: the timing's layer takes the table
        seen = []

        def lstm(x, *args, seen=seen, **kwargs):
            seen.append((x.dtype, kwargs.get("embedding") is not None))
            return real(x, *args, **kwargs)

        monkeypatch.setattr(cpu_lstm, "lstm", lstm)
        speedup = cpu_lstm.speedup_over_fused(EMBED, HIDDEN, 1, BATCH, 50, vocab)
        assert 0 < speedup < float("inf")
        assert len(seen) == cpu_lstm._WARM_UP + cpu_lstm._TIMED and set(seen) == {
            (torch.int64, True) if vocab else (torch.bfloat16, False)
        }


def test_ids_outside_the_vocabulary_are_refused_as_a_lookup_refuses_them():
    embedding, weights, ids, state, _ = weights_and_inputs(1)
    weights = [w.bfloat16() for w in weights]
    state = tuple(t.bfloat16() for t in state)
    for bad in (VOCAB, -1):
        ids[2, 7] = bad
        with pytest.raises(IndexError):
            F.embedding(ids, embedding.bfloat16())
        with pytest.raises(IndexError, match="out of range"):
            cpu_lstm.lstm(ids, state, weights, 0.0, True, embedding=embedding.bfloat16())


def test_int32_ids_give_what_int64_ids_give():
    args = weights_and_inputs(1)
    out64, grads64 = run(*args, torch.bfloat16, "table")
    out32, grads32 = run(args[0], args[1], args[2].int(), *args[3:], torch.bfloat16, "table")
    assert torch.equal(out32, out64)
    assert all(torch.equal(a, b) for a, b in zip(grads32, grads64, strict=True))


def test_the_gradient_check_runs_the_table_where_the_run_takes_it():
    from charnn.nn import grad_check

    sizes = ("lstm", "charnn-bf16", EMBED, HIDDEN, 1, BATCH, STEPS)
    errors = {vocab: grad_check.gradient_error(*sizes, vocab) for vocab in (0, VOCAB)}
    assert max(errors.values()) < grad_check.MAX_ERROR
    assert errors[0] != errors[VOCAB]  # the embedding's gradient counts as the input's
    # the run (6 x 150 characters) takes the table; the check's 50 steps take it at 300 // 16 = 18 rows
    assert cpu_lstm.trial_vocab(VOCAB, BATCH, STEPS, grad_check.MAX_STEPS) == 18
    assert cpu_lstm.trial_vocab(VOCAB, BATCH, 60, 50) == 0  # 40 x 16 > 6 x 60: the run looks rows up
