"""Does averaging the weights of a run's last checkpoints beat its final weights? Validation loss of each.

    python benchmarks/quality.py --preset cpu-5m --keep runs/avg --set save_every=100 --set keep=20
    python benchmarks/average_weights.py runs/avg [--last 2 3 5] [--json OUT]

For each K, the fp32 weights of the newest K checkpoints are averaged (equal weights) and evaluated like
`charnn evaluate`: over the whole validation split, state carried and per 100-char window. The newest
checkpoint alone is the K = 1 row. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import charnn  # noqa: E402
from charnn.device import describe_cpu  # noqa: E402
from charnn.store.checkpoint import list_checkpoints, load_checkpoint  # noqa: E402


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("run", type=Path, help="a run folder trained with --save-every")
    parser.add_argument("--last", type=int, nargs="+", default=[2, 3, 5, 8], help="checkpoints to average")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args()
    checkpoints = list_checkpoints(args.run)
    if not checkpoints:
        sys.exit(f"average_weights: {args.run} holds no checkpoints; train with --save-every")
    loaded = charnn.load(args.run)
    rows = []
    for k in sorted({1, *args.last}):
        if k > len(checkpoints):
            print(f"skipping K={k}: the run holds {len(checkpoints)} checkpoints")
            continue
        chosen = [load_checkpoint(path) for path in checkpoints[-k:]]
        averaged = {name: sum(c.weights[name] for c in chosen) / k for name in chosen[0].weights}
        loaded.model.load_state_dict(averaged)
        report = charnn.evaluate(loaded)
        row = {
            "checkpoints": k,
            "steps": [c.state["step"] for c in chosen],
            "val_carried": round(report["nats_per_char"], 4),
            "val_windows": round(report["windows"]["nats_per_char"], 4),
        }
        print(json.dumps(row))
        rows.append(row)
    result = {"run": str(args.run), **describe_cpu(), "date": time.strftime("%Y-%m-%d"), "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
