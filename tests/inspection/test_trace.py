"""The look inside, checked against the model itself, and the text features it correlates units with."""

import numpy as np
import pytest
import torch

from charnn.config import ModelConfig
from charnn.inspection.features import FEATURES, correlations, find_units, units_to_show
from charnn.inspection.trace import trace
from charnn.nn.model import CharRNN
from charnn.text.vocab import Vocab

TEXT = 'First Citizen:\nSpeak, "speak" (now).\n  done'


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_surprisal_guesses_and_last_layer_match_the_whole_model(cell):
    torch.manual_seed(0)
    vocab = Vocab.from_text(TEXT)
    model = CharRNN(ModelConfig(vocab_size=len(vocab), cell=cell, hidden=12, embedding=6, layers=3))
    t = trace(model, vocab, TEXT)
    with torch.no_grad():
        logits, _ = model(torch.tensor([vocab.encode("\n" + TEXT).tolist()]))
        logp = torch.log_softmax(logits[0], -1)
        out, _ = model.rnn(
            model.embedding(torch.tensor([vocab.encode("\n" + TEXT).tolist()])), model.init_state(1)
        )
    ids = vocab.encode(TEXT)
    expected = -logp[torch.arange(len(ids)), torch.as_tensor(ids).long()]
    np.testing.assert_allclose(t.surprisal, expected.numpy(), atol=1e-5)
    best = logp[0].topk(5)
    assert [c for c, _ in t.guesses[0]] == [vocab.chars[i] for i in best.indices.tolist()]
    np.testing.assert_allclose([p for _, p in t.guesses[0]], best.values.exp().numpy(), atol=1e-6)
    assert len(t.layers) == 3 and all(a.shape == (len(TEXT), 12) for a in t.layers)
    np.testing.assert_allclose(t.layers[-1], out[0, 1:].numpy(), atol=1e-5)


def test_without_a_newline_in_the_vocabulary_the_first_char_has_no_surprisal():
    vocab = Vocab.from_text("abc")
    model = CharRNN(ModelConfig(vocab_size=3, hidden=4, embedding=2))
    t = trace(model, vocab, "abca")
    assert np.isnan(t.surprisal[0]) and not np.isnan(t.surprisal[1:]).any()
    assert t.guesses[0] == [] and len(t.guesses[1]) == 3


def test_features_mark_what_they_name():
    text = 'ab "cd (e)"\nFirst Citizen:\n  x'
    values = {name: f(text).tolist() for name, f in FEATURES.items()}
    assert values["inside quotes"][4:10] == [1] * 6 and values["inside quotes"][10] == 0
    assert values["inside brackets"][8] == 1 and sum(values["inside brackets"]) == 1
    assert values["position in line"][:3] == [0, 1, 2] and values["position in line"][12] == 0
    assert values["speaker line"][12:27] == [1] * 15 and values["indentation"][-1] == 2
    assert values["upper case"][12] == 1 and values["start of a word"][4] == 1


def test_the_unit_finder_ranks_units_by_their_correlation():
    text = 'a "bc" d "efg" h'
    feature = FEATURES["inside quotes"](text)
    rng = np.random.default_rng(0)
    acts = rng.normal(size=(len(text), 5))
    acts[:, 3] = feature + 0.1 * rng.normal(size=len(text))  # unit 3 follows the quotes
    acts[:, 1] = -feature
    found = find_units(acts, text)
    assert found["inside quotes"][0][0] == 1 and found["inside quotes"][0][1] == pytest.approx(-1.0)
    assert found["inside quotes"][1][0] == 3 and found["inside quotes"][1][1] > 0.9
    assert "indentation" not in found  # constant in this text: nothing to correlate with
    assert correlations(acts, np.zeros(len(text))) is None
    shown = units_to_show(found, 2)
    assert [u for u, _, _ in shown] == [1, 3]
