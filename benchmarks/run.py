"""charnn against the naive PyTorch port of the tutorial, side by side on this machine, as ratios.

    python benchmarks/run.py [--baseline PATH] [--quick] [--json OUT]

Runs the baseline (seed_torch.py: the tutorial ported line for line) in a subprocess, then charnn's own
benchmark (`charnn bench`), and prints one table and one JSON object with each figure as a ratio to the
baseline (`train_ratio`, `gen_ratio`, `gen64_ratio`). Writes the JSON to benchmarks/results/ too, named
by date and CPU kind. Absolute speeds drift between runs and machines; ratios measured in one run do not.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from charnn.bench import format_report, run  # noqa: E402
from charnn.process_memory import watch_memory  # noqa: E402
from charnn.text.corpus import SHAKESPEARE, load_corpus  # noqa: E402

DEFAULT_BASELINE = ROOT.parent / "shared" / "baselines" / "seed_torch.py"


def run_baseline(path: Path, quick: bool) -> dict:
    """The baseline's own JSON: training chars/s (median step) and batch-1 generation chars/s."""
    corpus = load_corpus(SHAKESPEARE)
    with open(ROOT / "benchmarks" / ".shakespeare.txt", "w", encoding="utf-8") as f:
        f.write(corpus.vocab.decode(corpus.ids))
    cmd = [
        sys.executable,
        str(path),
        "--data",
        f.name,
        "--train-steps",
        "5" if quick else "20",
        "--generate",
        "200" if quick else "500",
    ]
    memory, out = watch_memory(cmd)
    Path(f.name).unlink()
    return {**json.loads(out.strip().splitlines()[-1]), "peak_rss_mib": memory["peak_rss_mib"]}


def ratios(base: dict, ours: dict) -> dict:
    auto = ours["train_auto"]
    gen = ours["generate"][ours["generate_best"]]
    gen64 = max(ours["generate_64"].values())
    return {
        "train_ratio": ours["train"][auto]["chars_per_s"] / base["train_chars_per_s"],
        "train_ratio_fp32": ours["train"]["fp32"]["chars_per_s"] / base["train_chars_per_s"],
        "gen_ratio": gen / base["gen_chars_per_s"],
        "gen64_ratio": gen64 / base["gen_chars_per_s"],
        "train_rss_ratio": ours["train_peak_rss_mib"] / base["peak_rss_mib"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--baseline", type=Path, default=DEFAULT_BASELINE, help="path of seed_torch.py")
    parser.add_argument(
        "--quick", action="store_true", help="fewer steps, no scaling table (under 2 minutes)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    started = time.perf_counter()
    print("baseline ...", file=sys.stderr)
    base = run_baseline(args.baseline, args.quick)
    ours = run(args.quick, log=lambda msg: print(msg, file=sys.stderr))
    result = {"baseline": base, "charnn": ours, **ratios(base, ours)}
    result["seconds"] = round(time.perf_counter() - started, 1)
    print(format_report(ours))
    train, gen = base["train_chars_per_s"], base["gen_chars_per_s"]
    print(f"baseline: train {train:,.0f} chars/s, generate {gen:,.0f} chars/s")
    print(
        f"ratios: train {result['train_ratio']:.2f}x ({ours['train_auto']}; "
        f"fp32 {result['train_ratio_fp32']:.2f}x), "
        f"generate {result['gen_ratio']:.2f}x, 64 samples {result['gen64_ratio']:.1f}x, "
        f"training peak RSS {result['train_rss_ratio']:.2f}x  "
        f"[{result['seconds']:.0f} s]"
    )
    text = json.dumps(result, indent=2) + "\n"
    name = f"{ours['date']}-{ours['cpu_kind']}{'-quick' if args.quick else ''}.json"
    (ROOT / "benchmarks" / "results").mkdir(exist_ok=True)
    (ROOT / "benchmarks" / "results" / name).write_text(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
