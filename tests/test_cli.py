"""End-to-end tests of the real `charnn` command in subprocesses."""

import json
import re
import signal
import subprocess
import sys

import pytest

from conftest import TINY_FLAGS, assert_clean_error, run_cli


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    (root / "corpus.txt").write_text("All:\nSpeak, speak.\n\nFirst Citizen:\nYou are all resolved.\n\n" * 200)
    result = run_cli(
        "train",
        "--data",
        "corpus.txt",
        "--out",
        "run",
        "--epochs",
        "1",
        "--log-every",
        "10",
        *TINY_FLAGS,
        cwd=root,
    )
    assert result.returncode == 0, result.stderr
    return root, result


def test_train_prints_the_tutorials_log_and_a_summary(cli_run):
    _, result = cli_run
    assert re.search(r"Epoch 1 Step 10 Loss \d\.\d{4}", result.stdout)
    assert "Time taken for 1 epoch" in result.stdout
    assert re.search(r"trained \d+ steps \(1\.00 epochs.* s of training, best val loss", result.stderr)
    assert re.search(r"checking the best model with smaller weight formats on [\d,]+ val", result.stdout)


def test_generate_streams_text_reproducibly(cli_run):
    root, _ = cli_run
    a = run_cli("generate", "run", "--start", "All:", "--length", "120", "--seed", "1", cwd=root)
    b = run_cli("generate", "run", "--start", "All:", "--length", "120", "--seed", "1", cwd=root)
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout
    assert a.stdout.startswith("All:") and len(a.stdout) == 4 + 120 + 1


def test_generate_without_a_seed_says_the_seed_that_gives_its_text_again(cli_run):
    root, _ = cli_run
    a = run_cli("generate", "run", "--length", "80", cwd=root)
    assert a.returncode == 0, a.stderr
    seed = re.fullmatch(r"charnn: seed (\d+) \(--seed \1 gives this text again\)\n", a.stderr)
    assert seed, a.stderr
    b = run_cli("generate", "run", "--length", "80", "--seed", seed.group(1), cwd=root)
    assert b.stdout == a.stdout and b.stderr == ""


def test_generate_several_samples_with_separators(cli_run):
    root, _ = cli_run
    result = run_cli(
        "generate",
        "run/model",
        "--length",
        "50",
        "--num-samples",
        "3",
        "--top-k",
        "5",
        "--seed",
        "2",
        cwd=root,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("-" * 40) == 2


def test_evaluate_json_and_text(cli_run):
    root, _ = cli_run
    result = run_cli("evaluate", "run", "--json", cwd=root)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["split"] == "val" and 0 < report["nats_per_char"] < 5
    assert report["bits_per_char"] == pytest.approx(report["nats_per_char"] / 0.6931471805599453)
    text = run_cli("evaluate", "run", "--split", "train", cwd=root)
    assert "nats/char" in text.stdout and "perplexity" in text.stdout


def test_info(cli_run):
    root, _ = cli_run
    result = run_cli("info", "run", "--json", cwd=root)
    info = json.loads(result.stdout)
    assert info["model"]["hidden"] == 32 and info["training"]["epochs"] == 1
    assert info["parameters"] > 0 and info["vocab_size"] == len(info["vocab"])
    assert "parameters" in run_cli("info", "run", cwd=root).stdout


def option_entries(help_text: str) -> list[str]:
    """Each option's entry (flag line plus its wrapped help) from argparse's help output."""
    body = help_text.split("\n\n", 1)[1]  # skip the usage block
    entries: list[str] = []
    for line in body.splitlines():
        if line.startswith("  -"):
            entries.append(line)
        elif line.startswith("    ") and entries:
            entries[-1] += " " + line.strip()
    return entries


@pytest.mark.parametrize("command", ["train", "generate", "evaluate", "info", "serve", "bench"])
def test_help_lists_every_flag_once_with_its_default(command):
    result = run_cli(command, "--help")
    assert result.returncode == 0
    entries = [e for e in option_entries(result.stdout) if not e.strip().startswith("-h, --help")]
    assert entries
    flags = [re.match(r"\s+(--[a-z-]+)", e).group(1) for e in entries]
    assert len(flags) == len(set(flags)), flags
    for entry in entries:
        assert "(default: " in entry, entry


@pytest.mark.parametrize("command", ["serve", "export"])
def test_a_commands_description_is_whole(command):
    description = " ".join(run_cli(command, "--help").stdout.split("\n\n")[1].split())
    assert f"(needs: pip install 'charnn[{command}]'" in description and description.endswith(").")


def test_python_dash_m_and_version():
    result = subprocess.run([sys.executable, "-m", "charnn", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("charnn ")


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["generate", "nowhere"], ["nowhere", "no such run"]),
        (["generate", "run", "--temperature", "0"], ["--temperature"]),
        (["generate", "run", "--start", "Zq~"], ["'~'", "--skip-unknown"]),
        (["generate", "run", "--top-p", "2"], ["--top-p"]),
        (["train", "--data", "missing.txt", "--out", "x"], ["missing.txt", "no such file"]),
        (["train", "--data", "corpus.txt", "--out", "run", "--max-steps", "3"], ["already holds a run"]),
        (["train", "--data", "corpus.txt", "--out", "y", "--dropout", "1.5"], ["--dropout"]),
        (["train", "--data", "corpus.txt", "--out", "y", "--io-dropout", "-0.1"], ["--io-dropout"]),
        (["evaluate", "run", "--data", "other.txt"], ["other.txt"]),
    ],
)
def test_bad_input_gets_one_clear_line(cli_run, args, needles):
    root, _ = cli_run
    (root / "other.txt").write_text("text with chars the model never saw: ~^|\n" * 50)
    assert_clean_error(run_cli(*args, cwd=root), *needles)


def test_unknown_flag_is_a_usage_error(cli_run):
    root, _ = cli_run
    result = run_cli("train", "--hiden", "3", cwd=root)
    assert result.returncode == 2 and "usage:" in result.stderr and "Traceback" not in result.stderr


def test_sigint_saves_a_checkpoint_and_resume_finishes(tmp_path):
    (tmp_path / "corpus.txt").write_text("a quick brown fox jumps over the lazy dog\n" * 3000)
    cmd = [
        sys.executable,
        "-m",
        "charnn",
        "train",
        "--data",
        "corpus.txt",
        "--out",
        "run",
        "--max-steps",
        "100000",
        "--log-every",
        "1",
        *TINY_FLAGS,
    ]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:  # wait until training is really under way
        if "Step 5 " in line:
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "stopped by SIGINT" in err and "--resume" in err and "Traceback" not in err
    saved = sorted((tmp_path / "run/checkpoints").iterdir())
    step = int(saved[-1].name[5:])
    assert step >= 5
    result = run_cli("train", "--out", "run", "--resume", "--max-steps", str(step + 5), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"trained {step + 5} steps" in result.stderr


def test_files_skipped_in_a_data_folder_are_named_even_when_quiet(tmp_path):
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "a.txt").write_text("All:\nSpeak, speak.\n" * 150)
    (folder / "b.txt").write_text("First Citizen:\nYou are all resolved.\n" * 150)
    (folder / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF" * 50)
    (folder / "notes.bin").write_bytes(bytes(range(256)) * 8)
    result = run_cli(
        "train",
        "--data",
        str(folder),
        "--out",
        "run",
        "--max-steps",
        "2",
        "--quiet",
        *TINY_FLAGS,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("charnn: warning:")]
    skipped = sorted(str(folder / name) for name in ("notes.bin", "photo.jpg"))
    assert warnings == [f"charnn: warning: {path}: skipped, it looks binary (not text)" for path in skipped]
    assert json.loads((tmp_path / "run/train_args.json").read_text())["skipped_files"] == skipped
    assert result.stdout == ""  # quiet: no progress, only the warnings and the summary on stderr


@pytest.mark.parametrize("reader", ["stdout", "stderr"])
def test_a_training_whose_reader_leaves_trains_on_and_saves(tmp_path, reader):
    """`charnn train ... | head -1`: the progress goes silent; the run is not cut short (it was, exit 0)."""
    (tmp_path / "corpus.txt").write_text("a quick brown fox jumps over the lazy dog\n" * 400)
    args = ["train", "--data", "corpus.txt", "--out", "run", "--max-steps", "60", "--log-every", "1"]
    args += TINY_FLAGS
    pipe = {reader: subprocess.PIPE}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL} | pipe
    proc = subprocess.Popen([sys.executable, "-m", "charnn", *args], cwd=tmp_path, **quiet)
    getattr(proc, reader).read(20)  # the first bit of output, then the reader goes away
    getattr(proc, reader).close()
    assert proc.wait(timeout=120) == 0
    assert (tmp_path / "run/checkpoints/step-000000060").is_dir()
