"""Generation settings and start strings, through the real CLI."""

import subprocess
import sys

import pytest
import torch

from charnn.config import ModelConfig
from charnn.nn.model import CharRNN
from charnn.store.model_dir import save_model
from charnn.text.vocab import Vocab
from conftest import assert_clean_error, run_cli


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--start", "Zebra~"], ["'Z'", "'b'", "'~'", "--skip-unknown"]),
        (["--length", "-1"], ["--length"]),
        (["--length", "1000000000"], ["--length", "1,000,000"]),
        (["--temperature", "0"], ["--temperature", "--greedy"]),
        (["--temperature", "-0.5"], ["--temperature"]),
        (["--temperature", "nan"], ["--temperature"]),
        (["--temperature", "1e-40"], ["--temperature", "--greedy"]),  # would overflow float32
        (["--seed", str(2**64)], ["--seed", "18,446,744,073,709,551,615"]),
        (["--seed", "9" * 400], ["--seed"]),  # an integer beyond a float
        (["--top-k", "0"], ["--top-k"]),
        (["--top-p", "0"], ["--top-p"]),
        (["--top-p", "1.01"], ["--top-p"]),
        (["--num-samples", "0"], ["--num-samples"]),
        (["--num-samples", "1000", "--length", "100000"], ["at most 10,000,000"]),
    ],
)
def test_bad_generation_requests(model_run, args, needles):
    assert_clean_error(run_cli("generate", str(model_run), *args), *needles)


@pytest.mark.parametrize(
    ("args", "check"),
    [
        (["--start", "Zebra", "--skip-unknown", "--length", "5"], lambda out: out.startswith("era")),
        (["--start", "", "--length", "20"], lambda out: len(out) == 21),
        (["--start", "All", "--length", "0"], lambda out: out == "All\n"),
        (["--greedy", "--temperature", "0", "--length", "10"], lambda out: len(out) == 11),
        (["--top-p", "1", "--top-k", "1000", "--length", "10"], lambda out: len(out) == 11),
    ],
)
def test_edge_requests_that_are_fine(model_run, args, check):
    result = run_cli("generate", str(model_run), "--seed", "0", *args)
    assert result.returncode == 0, result.stderr
    assert check(result.stdout), result.stdout


def test_start_with_bytes_that_are_not_utf8(model_run):
    result = subprocess.run(
        [sys.executable, "-m", "charnn", "generate", str(model_run), "--start", b"All\xff\xfe"],
        capture_output=True,
    )
    assert result.returncode == 1 and result.stdout == b""
    err = result.stderr.decode()
    assert err.startswith("charnn: error: --start holds characters") and err.count("\n") == 1


@pytest.mark.parametrize("extra", [[], ["--greedy"], ["--num-samples", "3"], ["--weights", "int8"]])
def test_a_model_whose_outputs_are_not_finite_is_refused_in_one_line(tmp_path, extra):
    vocab = Vocab.from_text("hello world\n")
    model = CharRNN(ModelConfig(vocab_size=len(vocab), embedding=8, hidden=16))
    with torch.no_grad():
        model.head.bias[3] = float("nan")
    save_model(tmp_path / "model", model, vocab, {})
    result = run_cli("generate", str(tmp_path / "model"), "--start", "he", "--length", "5", *extra)
    assert_clean_error(result, "not finite", "use another model, or train again")
