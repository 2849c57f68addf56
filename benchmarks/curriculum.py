"""The curricula measured: a preset with and without sequence-length warm-up and scheduled sampling.

    python benchmarks/curriculum.py --reference runs/cpu-5m [--preset cpu-5m] [--budget 5m | --steps N]
        [--warmup-steps 300] [--sampling 0.2] [--json OUT]

Each arm trains the preset on tiny Shakespeare for the same time budget, one after the other. Reported per
arm: steps, chars seen, chars/s, the exact validation loss (state carried, and from a zero state per 100-char
window) and two figures of the text it generates on its own (open loop), which is what both curricula aim at:
- `reference_loss`: the loss (nats/char) of 8 seeded samples of 500 chars (temperature 1) under an independent
  model (`--reference`, trained separately): how plausible the generated text is to another model. Real
  validation text scores that model's own val loss; the lower, the more Shakespeare-like.
- `repeated_16grams`: the share of the samples' 16-char n-grams that occur more than once in the same
  sample (loops and stock phrases), beside the same share in as much real validation text.
On a machine shared with other work, time budgets measure the other work too: `--steps N` gives the
baseline N steps (the steps it takes in the budget on the quiet machine) and each other arm the steps that
cost as much, from per-step times measured side by side here (steps of each window length, and with the
extra pass of scheduled sampling, interleaved so that the other work weighs on all alike).
A benchmark, not a test: about the number of arms times the budget, plus a minute each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

import charnn  # noqa: E402
from charnn.config import ModelConfig, TrainConfig, parse_duration  # noqa: E402
from charnn.device import describe_cpu  # noqa: E402
from charnn.presets import settings_for  # noqa: E402
from charnn.text.corpus import load_corpus, split  # noqa: E402
from charnn.training.curriculum import seq_len_at  # noqa: E402
from charnn.training.step import TrainStep  # noqa: E402

SAMPLES, LENGTH, N = 8, 500, 16


def repeated_share(texts: list[str], n: int = N) -> float:
    """Share of each text's n-grams that occur more than once in that text, over all texts."""
    repeated = total = 0
    for text in texts:
        grams = Counter(text[i : i + n] for i in range(len(text) - n + 1))
        repeated += sum(c for c in grams.values() if c > 1)
        total += sum(grams.values())
    return repeated / max(total, 1)


def open_loop(run: Path, reference: Path, tmp: Path) -> dict:
    texts = [charnn.generate(run, start="\n", length=LENGTH, seed=s)[1:] for s in range(SAMPLES)]
    path = tmp / f"{run.name}-samples.txt"
    path.write_text("\n".join(texts), encoding="utf-8")
    scored = charnn.evaluate(reference, data=str(path), split="all")
    return {
        "reference_loss": round(scored["carried"]["nats_per_char"], 4),
        "repeated_16grams": round(repeated_share(texts), 4),
        "sample": texts[0][:300],
    }


def step_costs(preset: str, lengths: list[int], mix: float, rounds: int = 6) -> tuple[dict, float]:
    """Seconds per step at each window length, and the cost of a step with scheduled sampling relative to one
    without at the preset's length: medians of steps timed in turn."""
    model_settings, cfg = settings_for(preset, {})
    step = TrainStep(ModelConfig(vocab_size=65, **model_settings), cfg, torch.device("cpu"))
    step.choose_lstm_kernel(cfg.lstm_kernel, cfg.seq_len)
    gen = torch.Generator().manual_seed(0)
    kinds = [(n, 0.0) for n in lengths] + [(cfg.seq_len, mix)]
    times: dict = {k: [] for k in kinds}
    for r in range(rounds + 1):
        for n, m in kinds:
            x = torch.randint(0, 65, (cfg.batch_size, n + 1), generator=gen)
            started = time.perf_counter()
            step(x[:, :-1], x[:, 1:], 1e-4, None, mix=m, step=r)
            if r:  # the first round warms up
                times[(n, m)].append(time.perf_counter() - started)
    median = {k: statistics.median(v) for k, v in times.items()}
    per_length = {n: median[(n, 0.0)] for n in lengths}
    return per_length, median[(cfg.seq_len, mix)] / per_length[cfg.seq_len]


def matched_steps(name: str, steps: int, cfg: TrainConfig, costs: dict, sampling_cost: float) -> int:
    """Steps of arm `name` that cost what `steps` baseline steps cost."""
    if name == "scheduled-sampling":
        return round(steps / sampling_cost)
    if name == "seq-len-warmup":
        budget, spent, n = steps * costs[cfg.seq_len], 0.0, 0
        while spent + costs[seq_len_at(n, cfg)] <= budget:
            spent, n = spent + costs[seq_len_at(n, cfg)], n + 1
        return n
    return steps


def arm(name: str, out: Path, preset: str, stop: dict, reference: Path, extra: dict) -> dict:
    started = time.perf_counter()
    result = charnn.train(out, preset=preset, quiet=True, **stop, **extra)
    report = charnn.evaluate(out)
    return {
        "arm": name,
        "settings": extra,
        "steps": result.steps,
        "chars_seen": result.chars_seen,
        "stop": stop,
        "val_loss_carried": round(report["carried"]["nats_per_char"], 4),
        "val_loss_windows": round(report["windows"]["nats_per_char"], 4),
        "wall_s": round(time.perf_counter() - started, 1),
        **open_loop(out, reference, out.parent),
    }


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--reference", type=Path, required=True, help="an independent Shakespeare model")
    parser.add_argument("--preset", default="cpu-5m", choices=tuple(charnn.PRESETS))
    parser.add_argument("--budget", type=parse_duration, default=300.0, help="time budget per arm")
    parser.add_argument("--steps", type=int, default=None, help="baseline steps instead of the budget")
    parser.add_argument("--warmup-steps", type=int, default=300, help="--seq-len-warmup of that arm")
    parser.add_argument("--sampling", type=float, default=0.2, help="--scheduled-sampling of that arm")
    parser.add_argument("--arms", nargs="+", default=["baseline", "seq-len-warmup", "scheduled-sampling"])
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    settings = {
        "baseline": {},
        "seq-len-warmup": {"seq_len_warmup": args.warmup_steps},
        "scheduled-sampling": {"scheduled_sampling": args.sampling},
    }
    val = split(load_corpus("shakespeare").ids, 0.1)[1]
    vocab = load_corpus("shakespeare").vocab
    real = [vocab.decode(val[i * LENGTH : (i + 1) * LENGTH]) for i in range(SAMPLES)]
    costs, sampling_cost = {}, None
    if args.steps:
        cfg = settings_for(args.preset, settings["seq-len-warmup"])[1]
        lengths = sorted({seq_len_at(n, cfg) for n in range(args.warmup_steps + 1)})
        costs, sampling_cost = step_costs(args.preset, lengths, args.sampling)
        print(json.dumps({"seconds_per_step": costs, "scheduled_sampling_cost": sampling_cost}), flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.arms:
            if args.steps:
                cfg = settings_for(args.preset, settings[name])[1]
                steps = matched_steps(name, args.steps, cfg, costs, sampling_cost)
                stop = {"max_steps": steps, "time_budget": 1e9}  # the steps alone stop it
            else:
                stop = {"time_budget": args.budget}
            row = arm(name, Path(tmp) / name, args.preset, stop, args.reference, settings[name])
            results.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "sample"}), flush=True)
            print(row["sample"].replace("\n", " | ")[:200], flush=True)
    report = {
        "machine": describe_cpu(),
        "date": time.strftime("%Y-%m-%d"),
        "preset": args.preset,
        "budget_s": None if args.steps else args.budget,
        "baseline_steps": args.steps,
        "seconds_per_step_by_length": {str(k): round(v, 4) for k, v in costs.items()},
        "scheduled_sampling_step_cost": sampling_cost and round(sampling_cost, 3),
        "reference": str(args.reference),
        "real_text_repeated_16grams": round(repeated_share(real), 4),
        "results": results,
    }
    print(json.dumps({k: v for k, v in report.items() if k != "results"}))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
