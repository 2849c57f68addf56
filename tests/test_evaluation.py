import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import charnn
from charnn.errors import DataError
from charnn.evaluation import LossReport, loss_carried, loss_windows
from charnn.text.corpus import load_corpus, split


def reference_carried(model, ids) -> float:
    """One unbroken pass, one char at a time."""
    x = torch.from_numpy(ids.astype(np.int64))
    with torch.no_grad():
        logits, _ = model(x[:-1].unsqueeze(0))
    return F.cross_entropy(logits[0], x[1:]).item()


def test_carried_loss_matches_one_unbroken_pass(trained_run):
    loaded = charnn.load(trained_run)
    corpus = load_corpus(loaded.info["training"]["data"])
    ids = corpus.ids[:6000]
    exact = reference_carried(loaded.model, ids)
    assert loss_carried(loaded.model, ids, streams=1).nats == pytest.approx(exact, abs=1e-6)
    fast = loss_carried(loaded.model, ids, streams=8, burn_in=100)
    assert fast.chars == len(ids) - 1
    assert abs(fast.nats - exact) < 1e-3


def test_window_loss_reads_each_window_from_a_zero_state(trained_run):
    loaded = charnn.load(trained_run)
    ids = load_corpus(loaded.info["training"]["data"]).ids[:1050]
    x = torch.from_numpy(ids.astype(np.int64))
    total = 0.0
    with torch.no_grad():
        for s in range(0, 1049, 100):
            piece = x[s : min(s + 101, 1050)]
            logits, _ = loaded.model(piece[:-1].unsqueeze(0))
            total += F.cross_entropy(logits[0], piece[1:], reduction="sum").item()
    report = loss_windows(loaded.model, ids, window=100, batch_size=4)
    assert report.chars == 1049
    assert report.nats == pytest.approx(total / 1049, rel=1e-6)


def test_loss_report_units():
    r = LossReport(nats=math.log(2), chars=10)
    assert r.bits == pytest.approx(1.0)
    assert r.perplexity == pytest.approx(2.0)
    assert set(r.to_dict()) == {"nats_per_char", "bits_per_char", "perplexity", "chars"}


def test_evaluate_api_reports_both_modes_over_the_whole_split(trained_run):
    report = charnn.evaluate(trained_run)
    corpus = load_corpus(report["data"])
    assert report["chars"] == len(split(corpus.ids, 0.1)[1]) - 1
    assert report["nats_per_char"] == report["carried"]["nats_per_char"]
    assert 0 < report["windows"]["nats_per_char"] < 5
    everything = charnn.evaluate(trained_run, split="all")
    assert everything["chars"] == len(corpus) - 1


def test_too_little_text_to_evaluate():
    model = charnn.CharRNN(charnn.ModelConfig(vocab_size=3, hidden=4, embedding=2))
    with pytest.raises(DataError, match="at least 2"):
        loss_carried(model, np.array([1]))


def test_a_loss_past_a_floats_range_has_an_infinite_perplexity():
    import math

    from charnn.evaluation import LossReport

    assert LossReport(nats=800.0, chars=10).perplexity == math.inf
    assert LossReport(nats=1.0, chars=10).to_dict()["perplexity"] == math.e
