"""Curricula: windows growing to --seq-len, and scheduled sampling (the model fed its own samples)."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

import charnn
from charnn.config import TrainConfig
from charnn.errors import ConfigError
from charnn.training import curriculum
from charnn.training.curriculum import chars_before, seq_len_at
from conftest import TINY, TINY_FLAGS, assert_clean_error, run_cli


def test_windows_grow_to_the_full_length_in_multiples_of_eight():
    cfg = TrainConfig(seq_len=100, seq_len_warmup=10)
    lengths = [curriculum.seq_len_at(s, cfg) for s in range(12)]
    assert lengths == [16, 24, 32, 40, 56, 64, 72, 80, 96, 100, 100, 100]
    assert curriculum.chars_before(12, cfg) == sum(lengths)
    assert curriculum.seq_len_at(0, TrainConfig(seq_len=5, seq_len_warmup=3)) == 5  # never over --seq-len
    assert curriculum.chars_before(7, TrainConfig(seq_len=100)) == 700


def test_the_sampling_chance_rises_linearly_to_its_setting():
    cfg = TrainConfig(scheduled_sampling=0.4)
    assert [curriculum.sampling_prob(s, cfg, 100) for s in (0, 50, 100, 200)] == [0.0, 0.2, 0.4, 0.4]
    assert curriculum.sampling_prob(50, cfg, 0) == 0.0  # no plan yet (a time budget's first steps)
    assert curriculum.sampling_prob(50, TrainConfig(), 100) == 0.0


def test_mixing_replaces_inputs_by_samples_of_the_previous_prediction():
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, 5, (4, 20), generator=gen)
    logits = torch.full((4, 20, 5), -1e4)
    logits[..., 3] = 0  # the model is sure the next char is 3
    assert torch.equal(curriculum.mix_inputs(x, logits, 0.0, 1, 0, slice(0, 4), 4), x)
    every = curriculum.mix_inputs(x, logits, 1.0, 1, 0, slice(0, 4), 4)
    assert torch.equal(every[:, 0], x[:, 0]) and bool((every[:, 1:] == 3).all())
    half = curriculum.mix_inputs(x, torch.randn(4, 20, 5, generator=gen), 0.5, 1, 7, slice(0, 4), 4)
    assert 0 < int((half != x).sum()) < 4 * 19
    # the draws belong to the global batch: two processes' halves make up one process's whole
    halves = [curriculum.mix_inputs(x[r], logits[r], 0.5, 1, 7, r, 4) for r in (slice(0, 2), slice(2, 4))]
    assert torch.equal(torch.cat(halves), curriculum.mix_inputs(x, logits, 0.5, 1, 7, slice(0, 4), 4))


@pytest.mark.parametrize("batching", ["windows", "stream"])
def test_resume_is_bit_for_bit_with_both_curricula(tmp_path, corpus_file, batching):
    """Both curricula follow the run's plan (12 steps here), so the resumed run must have that plan too:
    the run is cut back to its checkpoint at step 4 and resumed from there."""
    common = dict(
        data=str(corpus_file),
        batching=batching,
        scheduled_sampling=0.5,
        seq_len_warmup=6,
        save_every=4,
        quiet=True,
        **TINY,
    )
    charnn.train(tmp_path / "straight", max_steps=12, **common)
    charnn.train(tmp_path / "split", max_steps=12, **common)
    for later in ("step-000000008", "step-000000012"):
        shutil.rmtree(tmp_path / "split/checkpoints" / later)
    charnn.train(tmp_path / "split", resume=True, max_steps=12, quiet=True)
    a = load_file(str(tmp_path / "straight/checkpoints/step-000000012/model.safetensors"))
    b = load_file(str(tmp_path / "split/checkpoints/step-000000012/model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_scheduled_sampling_changes_what_is_learnt(tmp_path, corpus_file):
    common = dict(data=str(corpus_file), max_steps=6, quiet=True, **TINY)
    charnn.train(tmp_path / "plain", **common)
    charnn.train(tmp_path / "sampled", scheduled_sampling=0.9, **common)
    a = load_file(str(tmp_path / "plain/checkpoints/step-000000006/model.safetensors"))
    b = load_file(str(tmp_path / "sampled/checkpoints/step-000000006/model.safetensors"))
    assert not all(torch.equal(a[k], b[k]) for k in a)


def test_chars_seen_count_the_shorter_windows(tmp_path, corpus_file):
    charnn.train(
        tmp_path / "run",
        data=str(corpus_file),
        max_steps=6,
        seq_len_warmup=4,
        quiet=True,
        **{**TINY, "log_every": 1},
    )
    lines = [json.loads(x) for x in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    chars = [x["chars"] for x in lines if "loss" in x]
    assert chars == [8 * c for c in (8, 24, 48, 80, 112, 144)]  # windows of 8, 16, 24, 32, then 32
    state = json.loads((tmp_path / "run/checkpoints/step-000000006/state.json").read_text())
    assert state["chars_seen"] == 144 * 8


def test_a_chance_outside_0_1_is_refused(tmp_path, corpus_file):
    r = run_cli(
        "train",
        "--out",
        str(tmp_path / "run"),
        "--data",
        str(corpus_file),
        *TINY_FLAGS,
        "--scheduled-sampling",
        "1",
    )
    assert_clean_error(r, "--scheduled-sampling must be in [0, 1), got 1")
    with pytest.raises(ConfigError, match="--seq-len-warmup must be 0 or more, got -1"):
        TrainConfig(seq_len_warmup=-1)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("seq_len", "warmup"), [(100, 1), (100, 7), (100, 1000), (64, 333), (7, 50), (9, 3)])
def test_chars_before_is_the_sum_of_the_window_lengths_and_costs_the_same_at_any_step(seq_len, warmup):
    cfg = TrainConfig(seq_len=seq_len, seq_len_warmup=warmup)
    total = 0
    for step in range(warmup + 20):
        assert chars_before(step, cfg) == total, step
        total += seq_len_at(step, cfg)
    long = TrainConfig(seq_len=100, seq_len_warmup=10**9)  # summed step by step, a call here took minutes
    assert chars_before(10**9 + 5, long) == chars_before(10**9, long) + 500
