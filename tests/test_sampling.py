import math

import pytest
import torch

import charnn
from charnn.config import SamplingConfig
from charnn.errors import CharnnError, ConfigError
from charnn.sampling import draw_noise, filter_logits, pick, pick_rows, start_text
from charnn.text.vocab import Vocab


@pytest.mark.parametrize(
    "bad",
    [
        {"temperature": 0},
        {"temperature": -1},
        {"temperature": math.nan},
        {"length": -1},
        {"length": 10**9},
        {"top_k": 0},
        {"top_p": 0},
        {"top_p": 1.5},
        {"num_samples": 0},
    ],
)
def test_bad_sampling_settings_are_refused(bad):
    with pytest.raises(ConfigError):
        SamplingConfig(**bad)


def test_greedy_ignores_temperature(trained_run):
    assert SamplingConfig(temperature=0, greedy=True).greedy
    cold = charnn.generate(trained_run, "All", 60, greedy=True, temperature=0)
    assert cold == charnn.generate(trained_run, "All", 60, greedy=True, temperature=5.0)
    assert cold == charnn.generate(trained_run, "All", 60, temperature=1e-6, seed=1)  # greedy is the limit


def test_top_k_keeps_exactly_the_k_largest():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0]])
    kept = torch.isfinite(filter_logits(logits, SamplingConfig(top_k=2)))
    assert kept.tolist() == [[False, True, False, True, False]]


def test_top_p_keeps_the_smallest_nucleus_reaching_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    kept = torch.isfinite(filter_logits(probs.log(), SamplingConfig(top_p=0.7)))
    assert kept.tolist() == [[True, True, False, False]]
    kept = torch.isfinite(filter_logits(probs.log(), SamplingConfig(top_p=0.4)))
    assert kept.tolist() == [[True, False, False, False]]


def test_a_top_p_below_float32s_smallest_number_keeps_the_likeliest_char():
    logits = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 1.0]])
    kept = torch.isfinite(filter_logits(logits, SamplingConfig(top_p=1e-60)))
    assert kept.tolist() == [[False, True, False], [True, False, False]]
    noise = draw_noise(torch.Generator().manual_seed(0), 2, 3)
    one = torch.ones(2)
    picked = pick_rows(
        logits, one, torch.full((2,), 3), torch.full((2,), 1e-60), torch.zeros(2, dtype=torch.bool), noise
    )
    assert picked.tolist() == [1, 0]


def test_a_temperature_no_float_holds_is_refused():
    with pytest.raises(ConfigError, match="--temperature must be a finite number"):
        SamplingConfig(temperature=10**400)


def test_low_temperature_sharpens_the_distribution():
    logits = torch.tensor([[0.0, 1.0]])
    g = torch.Generator().manual_seed(0)
    picks = [pick(logits, SamplingConfig(temperature=0.05), g).item() for _ in range(50)]
    assert picks == [1] * 50


def test_same_seed_same_text_and_different_seed_different_text(trained_run):
    a = charnn.generate(trained_run, "First", 200, seed=7)
    b = charnn.generate(trained_run, "First", 200, seed=7)
    c = charnn.generate(trained_run, "First", 200, seed=8)
    assert a == b and a != c
    assert a.startswith("First") and len(a) == 205


def test_an_unseeded_sample_is_random_and_leaves_torchs_own_generator_alone(trained_run):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    texts = {charnn.generate(trained_run, "First", 100) for _ in range(2)}
    assert torch.equal(torch.rand(3), expected)  # a program's own seed still holds
    assert len(texts) == 2


def test_num_samples_are_independent_and_reproducible(trained_run):
    samples = charnn.generate(trained_run, "All:", 100, num_samples=4, seed=3)
    assert len(samples) == 4 and len(set(samples)) == 4
    assert samples == charnn.generate(trained_run, "All:", 100, num_samples=4, seed=3)


def test_greedy_is_deterministic_without_a_seed(trained_run):
    assert charnn.generate(trained_run, "A", 50, greedy=True) == charnn.generate(
        trained_run, "A", 50, greedy=True
    )


def test_unknown_start_characters_are_named_or_skipped(trained_run):
    with pytest.raises(CharnnError, match="'Z'"):
        charnn.generate(trained_run, "Zebra", 10)
    text = charnn.generate(trained_run, "Zest", 10, seed=1, skip_unknown=True)
    assert text.startswith("est") and len(text) == 13


def test_a_start_skip_unknown_leaves_nothing_of_is_said(trained_run, capsys):
    text = charnn.generate(trained_run, "ZZ~", 10, seed=1, skip_unknown=True)
    assert text == charnn.generate(trained_run, "", 10, seed=1)  # at a new line, as with no start
    warned = capsys.readouterr().err.splitlines()
    assert warned == ["charnn: warning: --skip-unknown dropped every char of --start; starting at a new line"]
    charnn.generate(trained_run, "Zest", 10, seed=1, skip_unknown=True)
    assert capsys.readouterr().err == ""  # something left: nothing to say
    no_newline = Vocab(("a", "b"))
    with pytest.raises(ConfigError, match="dropped every char of --start; give a --start the model knows"):
        start_text(no_newline, SamplingConfig(start="Z", skip_unknown=True))


def test_empty_start_begins_a_line(trained_run):
    text = charnn.generate(trained_run, "", 30, seed=1)
    assert len(text) == 30
    assert "\n" + text == charnn.generate(trained_run, "\n", 30, seed=1)  # a newline is fed, not printed


def test_finite_logits_whose_float32_sum_overflows_are_finite():
    import torch

    from charnn.errors import ModelFileError
    from charnn.sampling import check_finite

    check_finite(torch.tensor([[3e38, 3e38, 1.0]]))  # finite, though their float32 sum is not
    with pytest.raises(ModelFileError, match="not finite"):
        check_finite(torch.tensor([[1.0, float("nan")]]))


def test_a_long_start_is_fed_in_pieces_once_for_all_samples():
    """Every sample's copy of a long start once took memory of its own (tens of GB for 1,024 samples)."""
    from charnn.config import ModelConfig
    from charnn.nn.model import CharRNN
    from charnn.sampling import FEED_CHARS, feed_start

    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=7, hidden=16, embedding=4, layers=2)).eval()
    ids = torch.randint(0, 7, (FEED_CHARS + 5000,), generator=torch.Generator().manual_seed(1)).tolist()
    with torch.no_grad():
        whole, whole_state = model(torch.tensor([ids]))  # one call over the whole start, one row
        logits, state = feed_start(model, ids, rows=3)  # in two pieces, copied to three rows
    assert logits.shape == (3, 7) and all(s.shape[1] == 3 for s in state)
    for row in range(3):
        torch.testing.assert_close(logits[row], whole[0, -1])
        for s, w in zip(state, whole_state, strict=True):
            torch.testing.assert_close(s[:, row], w[:, 0])


def test_samples_from_a_long_start_are_those_of_one_sample(model_run):
    start = ("All: " * 500)[:2000]  # 40 samples x 2,000 chars: over FEED_CHARS, fed once
    one = charnn.generate(model_run, start, 30, greedy=True)
    many = charnn.generate(model_run, start, 30, greedy=True, num_samples=40)
    assert many == [one] * 40
