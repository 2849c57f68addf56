"""Seeded outputs of the real CLI that must not change when the code is reorganised.

Two runs are trained (a tiny model on a short text, and the `small` preset for 20 steps on the built-in
Shakespeare), then `charnn generate` (several sampling settings) and `charnn evaluate` run on them. Their
stdout, the trained weights' sha256 and the losses in metrics.jsonl are compared byte for byte with the
outputs recorded for this kind of CPU and torch (floating-point results differ between CPU kinds, so each
kind has its own record; on CPUs with native bf16 it holds bf16 generation, whose LSTM steps run compiled
C, nn/lstm_steps.c). Record for a new kind, from the project root, with code whose behaviour is known to be
right: `.venv/bin/python tests/behaviour_cases.py --record`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

RECORDS = Path(__file__).parent / "behaviour_records.json"
PARAGRAPH = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
    "All:\nSpeak, speak.\n\n"
    "First Citizen:\nYou are all resolved rather to die than to famish?\n\n"
    "All:\nResolved. resolved.\n\n"
)
TINY = ["--hidden", "32", "--embedding", "16", "--seq-len", "32", "--batch-size", "8", "--precision", "fp32"]
TRAININGS = {
    "tiny": ["--data", "corpus.txt", "--max-steps", "60", "--log-every", "10", *TINY],
    "small": ["--preset", "small", "--max-steps", "20", "--precision", "fp32", "--log-every", "5"],
}
GENERATE = [
    ["--start", "All:", "--length", "200", "--seed", "1"],
    ["--start", "First", "--length", "150", "--seed", "2", "--temperature", "0.7", "--top-k", "5"],
    ["--length", "80", "--seed", "3", "--top-p", "0.9", "--num-samples", "3"],
    ["--start", "All:", "--length", "100", "--greedy"],
    ["--start", "Speak", "--length", "100", "--seed", "4", "--temperature", "1.3", "--precision", "fp32"],
    ["--start", "All", "--length", "60", "--seed", "5", "--num-samples", "2", "--precision", "int8"],
    ["--start", "Zebra", "--skip-unknown", "--length", "40", "--seed", "6"],
]
EVALUATE = {
    "tiny": [[], ["--json"], ["--split", "train", "--precision", "int8", "--json"]],
    "small": [[], ["--json"]],  # the train split of Shakespeare stepped in int8 takes over a minute
}
METRIC_KEYS = ("step", "epoch", "chars", "loss", "lr", "grad_norm", "val_loss", "val_bits_per_char")
Runner = Callable[[list[str], Path], subprocess.CompletedProcess]  # runs `charnn ARGS` in a folder


def platform_key() -> str:
    """The kind of CPU and torch whose floating-point results a record holds."""
    import torch

    from charnn.device import cpu_kind

    return f"{torch.backends.cpu.get_cpu_capability()}-{cpu_kind()}-torch{torch.__version__}"


def _subprocess(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "charnn", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=600
    )


def cli(*args: str, cwd: Path, run: Runner = _subprocess) -> str:
    """stdout of `charnn ARGS` run in `cwd` (by `run`: a fresh interpreter unless given), with that folder's
    path written as <folder>."""
    done = run(list(args), cwd)
    if done.returncode != 0:
        raise AssertionError(f"charnn {' '.join(args)} failed: {done.stderr}")
    return done.stdout.replace(str(cwd.resolve()), "<folder>")


def outputs(folder: Path, names: Iterable[str] = TRAININGS, run: Runner = _subprocess) -> dict:
    """Train the runs `names` in `folder`, then everything a record holds of them, as a JSON-ready dict."""
    (folder / "corpus.txt").write_text(PARAGRAPH * 100, encoding="utf-8")
    result: dict = {}
    for name in names:
        cli("train", "--out", name, "--quiet", *TRAININGS[name], cwd=folder, run=run)
        config = json.loads((folder / name / "model" / "config.json").read_text())
        metrics = [json.loads(x) for x in (folder / name / "metrics.jsonl").read_text().splitlines()]
        result[name] = {
            "weights_sha256": config["weights_sha256"],
            "weight_checks": config["inference"],
            "metrics": [{k: m[k] for k in METRIC_KEYS if k in m} for m in metrics],
            "generate": {" ".join(a): cli("generate", name, *a, cwd=folder, run=run) for a in GENERATE},
            "evaluate": {" ".join(a): cli("evaluate", name, *a, cwd=folder, run=run) for a in EVALUATE[name]},
        }
    return result


def main() -> None:
    import tempfile

    if "--record" not in sys.argv:
        sys.exit("usage: python tests/behaviour_cases.py --record")
    records = json.loads(RECORDS.read_text()) if RECORDS.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        records[platform_key()] = outputs(Path(tmp))
    RECORDS.write_text(json.dumps(records, indent=1, ensure_ascii=False, sort_keys=True) + "\n")
    print(f"recorded {platform_key()} in {RECORDS}")


if __name__ == "__main__":
    main()
