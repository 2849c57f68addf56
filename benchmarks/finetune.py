"""Fine-tuning measured: a small text trained from scratch against from a Shakespeare model, same budget.

    python benchmarks/finetune.py --text alice.txt --base runs/cpu-5m [--budgets 1m 3m]
        [--steps-per-minute R] [--arms scratch base base@1e-3] [--json OUT]

`--text` is a small corpus nobody here wrote; the figures in docs/presets.md use Project Gutenberg's #11,
Lewis Carroll's "Alice's Adventures in Wonderland" (public domain; a copy ships as examples/alice.txt in the
wordcloud project), with Project Gutenberg's header and licence cut off (the text between its "*** START"
and "*** END" lines). `--base` is a model trained on tiny Shakespeare (the figures: the `cpu-5m` preset).
Each arm trains the base model's shape with the `cpu-5m` preset's settings for each time budget; the
fine-tuned arms start from `--base` with `--extend-vocab` (Alice has characters Shakespeare lacks), `base@LR`
with another peak learning rate. Reported per arm: the exact validation loss (state carried, the last 10% of
the text) of the model kept (the best validation's), the validation curve, steps, chars seen, and a seeded
sample.
On a machine shared with other work a time budget measures the other work too: `--steps-per-minute R`
trains each arm for the steps this shape takes in its budget on the quiet machine instead (R measured there,
e.g. from a quiet `cpu-5m` run's steps and train_time_s); both arms cost the same per step (same shape and
settings).
A benchmark, not a test: it takes the number of arms times the sum of the budgets, plus a little.
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
from charnn.store.rundir import RunDir  # noqa: E402


def gutenberg_body(text: str) -> str:
    """The book without Project Gutenberg's header and licence, where the markers are there."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, x in enumerate(lines) if x.startswith("*** START")), -1)
    end = next((i for i, x in enumerate(lines) if x.startswith("*** END")), len(lines))
    return "".join(lines[start + 1 : end]).strip() + "\n"


def arm(
    name: str,
    out: Path,
    text: Path,
    budget: float,
    base: Path | None,
    per_minute: float | None,
    lr: float | None,
) -> dict:
    extra = {"init_from": str(base), "extend_vocab": True} if base else {}
    if lr is not None:
        extra["lr"] = lr
    # a huge budget replaces the preset's own, so that the step count alone stops the run
    stop = (
        {"max_steps": round(budget / 60 * per_minute), "time_budget": 1e9}
        if per_minute
        else {"time_budget": budget}
    )
    started = time.perf_counter()
    result = charnn.train(out, preset="cpu-5m", data=str(text), quiet=True, **stop, **extra)
    sample = charnn.generate(out, start="Alice ", length=300, seed=1)
    return {
        "arm": name,
        "budget_s": budget,
        "lr": lr,
        "val_loss_carried": round(result.val_loss, 4),  # the best validation's (the model kept)
        "val_curve": val_curve(out),
        "steps": result.steps,
        "chars_seen": result.chars_seen,
        "stop": stop,
        "wall_s": round(time.perf_counter() - started, 1),
        "sample": sample,
    }


def val_curve(run: Path) -> list[list]:
    """[step, val loss] at each validation of the run: where fine-tuning starts to overfit shows here."""
    return [[x["step"], round(x["val_loss"], 4)] for x in RunDir(run).read_metrics() if "val_loss" in x]


def parse_arm(spec: str) -> tuple[bool, float | None]:
    """(starts from --base, its learning rate or None for the preset's) of `scratch`, `base` or `base@LR`;
    ValueError for anything else."""
    kind, at, lr = spec.partition("@")
    if not at and kind in ("scratch", "base"):
        return kind == "base", None
    if kind == "base" and float(lr) > 0:
        return True, float(lr)
    raise ValueError(spec)


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--text", type=Path, required=True, help="the small corpus")
    parser.add_argument("--base", type=Path, required=True, help="a Shakespeare model to start from")
    parser.add_argument("--budgets", nargs="+", default=["1m", "3m"], help="time budgets, e.g. 1m 3m")
    parser.add_argument("--steps-per-minute", type=float, default=None, help="steps instead of time")
    parser.add_argument(
        "--arms", nargs="+", default=["scratch", "base"], help="scratch, base, and/or base@LR (another lr)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    arms = []
    for spec in args.arms:
        try:
            from_base, lr = parse_arm(spec)
        except ValueError:
            parser.error(f"--arms: {spec!r} is not scratch, base or base@LR with LR a positive number")
        name = (
            "from Shakespeare" + (f", lr {spec.partition('@')[2]}" if lr else "")
            if from_base
            else "from scratch"
        )
        arms.append((name, args.base if from_base else None, lr))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        text = Path(tmp) / "text.txt"
        text.write_text(gutenberg_body(args.text.read_text(encoding="utf-8-sig")), encoding="utf-8")
        for budget in map(parse_duration, args.budgets):
            for name, base, lr in arms:
                out = Path(tmp) / f"{name}-{budget}".replace(" ", "-").replace(",", "")
                row = arm(name, out, text, budget, base, args.steps_per_minute, lr)
                results.append(row)
                shown = {k: v for k, v in row.items() if k != "sample"}
                print(json.dumps(shown), flush=True)
                print(row["sample"].replace("\n", " | ")[:200], flush=True)
        size = len(text.read_text(encoding="utf-8"))
    report = {
        "machine": describe_cpu(),
        "date": time.strftime("%Y-%m-%d"),
        "text": {"source": args.text.name, "chars": size},
        "base": str(args.base),
        "steps_per_minute": args.steps_per_minute,
        "results": results,
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
