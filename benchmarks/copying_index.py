"""The copying index: build time and peak memory of the suffix array (libdivsufsort through pydivsufsort,
which charnn uses, beside a numpy prefix-doubling sort), query time, and the training-time copy probe's cost.

    python benchmarks/copying_index.py [--big-mb 100] [--skip-training] [--json OUT]

Corpora: tiny Shakespeare (1.1 MB) and a generated text of --big-mb MB (tiny Shakespeare's lines shuffled
per copy, as benchmarks/big_corpus.py writes it). Each build runs in its own process, its peak RSS sampled
every 20 ms. The numpy sort runs on tiny Shakespeare and a 10 MB text only (past that it needs several GB).
Queries: 10,000 chars of validation text and 10,000 chars copied from the training text (long matches).
Training: the `small` preset for 300 steps validating every 100; the probe's seconds against training's.
A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402

from big_corpus import write_corpus  # noqa: E402
from charnn.device import describe_cpu  # noqa: E402
from charnn.process_memory import watch_memory  # noqa: E402
from charnn.store.rundir import RunDir  # noqa: E402
from charnn.text.corpus import SHAKESPEARE, load_corpus, split  # noqa: E402
from charnn.text.suffix_index import SuffixIndex, build_suffixes  # noqa: E402

BUILD = """
import sys, time, numpy as np
sys.path.insert(0, {src!r})
from charnn.text.corpus import load_corpus
ids = np.ascontiguousarray(load_corpus({source!r}).ids)
start = time.perf_counter()
if {method!r} == "pydivsufsort":
    from charnn.text.suffix_index import build_suffixes
    sa = build_suffixes(ids)
else:
    n = len(ids); rank = ids.astype(np.int64); k = 1
    while True:  # prefix doubling: sort by (rank[i], rank[i + k]) until all ranks differ
        second = np.full(n, -1, np.int64); second[: n - k] = rank[k:]
        sa = np.lexsort((second, rank))
        key = rank[sa] * (n + 1) + second[sa] + 1
        new = np.empty(n, np.int64); new[sa] = np.concatenate([[0], np.cumsum(key[1:] != key[:-1])])
        rank = new; k *= 2
        if rank.max() == n - 1: break
print(time.perf_counter() - start, flush=True)
"""


def build_case(source: str, method: str, env: dict) -> dict:
    code = BUILD.format(src=str(ROOT / "src"), source=source, method=method)
    memory, out = watch_memory([sys.executable, "-c", code], env)
    return {
        "method": method,
        "build_s": round(float(out.strip()), 3),
        "peak_rss_mib": round(memory["peak_rss_mib"]),
    }


def query_case() -> dict:
    corpus = load_corpus(SHAKESPEARE)
    train, val = split(corpus.ids, 0.1)
    index = SuffixIndex(train, build_suffixes(train))
    out = {}
    for name, query in (("validation_10k", val[:10_000]), ("copied_10k", train[200_000:210_000])):
        start = time.perf_counter()
        m = index.matches(query)
        out[name] = {"seconds": round(time.perf_counter() - start, 3), "longest": int(m.lengths.max())}
    return out


def training_case(work: Path, env: dict) -> dict:
    import subprocess

    run = work / "run"
    cmd = [sys.executable, "-m", "charnn", "train", "--preset", "small", "--max-steps", "300",
           "--eval-every", "100", "--out", str(run), "--quiet"]  # fmt: skip
    subprocess.run(cmd, env=env, check=True)
    lines = RunDir(run).read_metrics()
    probes = [x["copy_probe_s"] for x in lines if "copy_probe_s" in x]
    train_s = max(x["train_time_s"] for x in lines)
    return {
        "steps": 300,
        "probes": len(probes),
        "probe_s": probes,
        "train_time_s": round(train_s, 2),
        "probe_share_of_training": round(sum(probes) / train_s, 4),
        "probe_share_without_first": round(sum(probes[1:]) / train_s, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--big-mb", type=float, default=100.0)
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = {**os.environ, "CHARNN_CACHE_DIR": str(work / "cache"), "PYTHONUNBUFFERED": "1"}
        ten, big = work / "ten.txt", work / "big.txt"
        write_corpus(ten, 10 << 20)
        write_corpus(big, int(args.big_mb * (1 << 20)))
        builds = {
            "tinyshakespeare": [build_case(SHAKESPEARE, m, env) for m in ("pydivsufsort", "numpy-doubling")],
            "10MB": [build_case(str(ten), m, env) for m in ("pydivsufsort", "numpy-doubling")],
            f"{args.big_mb:g}MB": [build_case(str(big), "pydivsufsort", env)],
        }
        result = {
            "benchmark": "copying_index",
            "date": datetime.date.today().isoformat(),
            "torch": torch.__version__,
            **describe_cpu(),
            "build": builds,
            "query": query_case(),
            "training": None if args.skip_training else training_case(work, env),
        }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
