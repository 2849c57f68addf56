"""Train on a generated 1 GiB text: peak anonymous memory and time to the first step, cold and cached.

    python benchmarks/big_corpus.py [--size-gib 1.0] [--workdir DIR] [--json OUT]

Writes the text (tiny Shakespeare, lines shuffled per copy, repeated to the size), then runs
`charnn train` on it twice in a subprocess: first with an empty cache (the corpus is encoded to the
memory-mapped cache), then again (the cache is reused). For each run it samples the process's RssAnon
every 20 ms and times process start to the first logged training step. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from charnn.device import describe_cpu  # noqa: E402
from charnn.process_memory import watch_memory  # noqa: E402
from charnn.text.corpus import SHAKESPEARE, load_corpus  # noqa: E402


def write_corpus(path: Path, size: int) -> None:
    lines = load_corpus(SHAKESPEARE).vocab.decode(load_corpus(SHAKESPEARE).ids).splitlines(keepends=True)
    rng = random.Random(0)
    written = 0
    with open(path, "w", encoding="utf-8") as f:
        while written < size:
            rng.shuffle(lines)
            block = "".join(lines)[: size - written]
            f.write(block)
            written += len(block.encode("utf-8"))


def timed_run(cmd: list[str], env: dict) -> dict:
    first: list[float] = []
    memory, _ = watch_memory(
        cmd, env, on_line=lambda line, t: first or " Step 1 " not in line or first.append(t)
    )
    return {
        "seconds_to_first_step": round(first[0], 2) if first else None,
        "seconds_total": round(memory["seconds"], 2),
        "peak_rss_anon_mib": round(memory["peak_rss_anon_mib"], 1),
    }


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--size-gib", type=float, default=1.0)
    parser.add_argument("--workdir", type=Path, default=None, help="where the text, cache and runs go")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        text = work / "big.txt"
        t0 = time.perf_counter()
        write_corpus(text, int(args.size_gib * (1 << 30)))
        print(f"wrote {text.stat().st_size:,} bytes in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        env = {**os.environ, "CHARNN_CACHE_DIR": str(work / "cache"), "PYTHONUNBUFFERED": "1"}
        base = [sys.executable, "-m", "charnn", "train", "--data", str(text), "--preset", "small",
                "--max-steps", "20", "--log-every", "1", "--val-fraction", "0.0001"]  # fmt: skip
        runs = {name: timed_run([*base, "--out", str(work / name)], env) for name in ("cold", "cached")}
    result = {
        "benchmark": "big_corpus",
        "date": datetime.date.today().isoformat(),
        "size_bytes": int(args.size_gib * (1 << 30)),
        **describe_cpu(),
        "cold": runs["cold"],
        "cached": runs["cached"],
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
