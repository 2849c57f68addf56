"""Train a preset from scratch on tiny Shakespeare and report its validation loss both ways, with the machine.

    python benchmarks/quality.py --preset cpu-10m [--budget 10m] [--set KEY=VALUE ...] [--json OUT]

The loss is `charnn evaluate` over the whole validation split (the last 10%, 111,539 predicted chars), in
nats per char: with the recurrent state carried through the split (the headline), and from a zero state per
100-char window. `--set` overrides a preset setting (e.g. `--set dropout=0.2`) to try variations. Also prints
a seeded 300-char sample. A benchmark, not a test: it takes the budget plus a little.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import charnn  # noqa: E402
from charnn.config import parse_duration  # noqa: E402
from charnn.device import describe_cpu  # noqa: E402
from charnn.export.shipped import commit  # noqa: E402


def parse_value(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        return text


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--preset", required=True, choices=tuple(charnn.PRESETS))
    parser.add_argument("--budget", type=parse_duration, default=None, help="time budget, e.g. 5m")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    parser.add_argument("--keep", type=Path, default=None, help="train into this run folder and keep it")
    args = parser.parse_args()
    overrides = dict(item.split("=", 1) for item in args.set)
    settings = {key: parse_value(value) for key, value in overrides.items()}
    if args.budget:
        settings["time_budget"] = args.budget
    with tempfile.TemporaryDirectory() as tmp:
        run = args.keep or Path(tmp) / "run"
        started = time.perf_counter()
        result = charnn.train(run, preset=args.preset, quiet=True, overwrite=True, **settings)
        wall = time.perf_counter() - started
        report = charnn.evaluate(run)
        sample = charnn.generate(run, "ROMEO: ", 300, seed=1)
        kernel = json.loads((run / "model" / "config.json").read_text())["training"]["lstm_kernel"]
        args_used = json.loads((run / "train_args.json").read_text())  # the preset resolved on this CPU
    out = {
        "preset": args.preset,
        "overrides": settings,
        "settings": {"model": args_used["model"], "train": args_used["train"]},
        "commit": commit(),
        **describe_cpu(),
        "date": time.strftime("%Y-%m-%d"),
        "steps": result.steps,
        "chars_seen": result.chars_seen,
        "train_time_s": round(result.elapsed_s, 1),
        "wall_time_s": round(wall, 1),
        "lstm_kernel": kernel,
        "train_loss": round(result.train_loss, 4),
        "val_carried": round(report["carried"]["nats_per_char"], 4),
        "val_windows": round(report["windows"]["nats_per_char"], 4),
        "sample": sample,
    }
    print(json.dumps(out, indent=2, ensure_ascii=False))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
