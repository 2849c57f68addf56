"""Malformed command lines get argparse's usage error (exit 2), never a traceback."""

import pytest

from conftest import run_cli


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ([], "required: COMMAND"),
        (["fly"], "invalid choice: 'fly'"),
        (["train", "--hiden", "3"], "unrecognized arguments: --hiden"),
        (["train", "--epochs", "ten"], "invalid int value: 'ten'"),
        (["train", "--epochs", "2", "--max-steps", "3"], "not allowed with argument"),
        (["train", "--time-budget", "5 days"], "not a duration"),
        (["train", "--cell", "transformer"], "invalid choice: 'transformer'"),
        (["train", "--preset", "huge"], "invalid choice: 'huge'"),
        (["generate"], "required: MODEL"),
        (["generate", "run", "--length", "many"], "invalid int value"),
        (["evaluate", "run", "--split", "test"], "invalid choice: 'test'"),
        (["info", "run", "--verbose"], "unrecognized arguments"),
    ],
)
def test_usage_errors(args, needle):
    result = run_cli(*args)
    assert result.returncode == 2, result.stderr
    assert "usage: charnn" in result.stderr and needle in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["train", "--hidden", "0"], "--hidden must be at least 1, got 0"),
        (["train", "--lr", "1e38"], "--lr must be in (0, 10]"),
        (["train", "--val-fraction", "1"], "--val-fraction must be in [0, 1)"),
        (["train", "--seq-len", "0"], "--seq-len must be at least 1"),
        (["train", "--seed", str(2**32)], "--seed must be between 0 and 4,294,967,295"),
        (["train", "--seed", "-1"], "--seed must be between 0 and 4,294,967,295"),
        (["train", "--hidden", "200000"], "lower --hidden"),
        (["train", "--device", "cuda"], "no CUDA GPU"),
    ],
)
def test_out_of_range_values_are_one_line_errors(tmp_path, args, needle):
    result = run_cli(*args, "--out", str(tmp_path / "run"))
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == result.stderr.strip().splitlines()[0]
    assert needle in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_a_mistyped_flag_is_refused_with_its_commands_usage_and_the_nearest_flag():
    result = run_cli("generate", "run", "--temprature", "0.5")
    assert result.returncode == 2
    assert result.stderr.startswith("usage: charnn generate")
    assert result.stderr.endswith("unrecognized arguments: --temprature 0.5; did you mean --temperature?\n")
    far = run_cli("train", "--colour", "blue")  # nothing near: no guess
    assert far.returncode == 2 and far.stderr.endswith(
        "charnn train: error: unrecognized arguments: --colour blue\n"
    )


def test_a_flags_value_of_two_dashes_is_that_text():
    # argparse in Python 3.11 takes `--start=--`'s value for the end of the options and gives an empty list
    result = run_cli("generate", "shakespeare", "--start=--", "--length", "5", "--seed", "1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("--") and len(result.stdout) == 2 + 5 + 1
    for args, needle in (
        (["train", "--epochs=--"], "argument --epochs: invalid value: '--'"),
        (["train", "--cell=--"], "argument --cell: invalid choice: '--' (choose from 'lstm', 'gru', 'rnn')"),
    ):
        bad = run_cli(*args)
        assert bad.returncode == 2 and needle in bad.stderr, bad.stderr
