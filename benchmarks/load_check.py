"""Load check of `charnn serve`: N concurrent streaming clients for a while against a model on 127.0.0.1.

    python benchmarks/load_check.py MODEL [--clients 8] [--seconds 30] [--length 200] [--json OUT]

Starts the server in a subprocess on a free port, then runs N client threads that each open
/v1/generate/stream again and again until the time is up, and reports requests served, errors (including
503 when the queue is full), and p50/p99 of the time from sending a request to its first generated char.
Only 127.0.0.1 is ever contacted. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from charnn.device import describe_cpu  # noqa: E402
from charnn.server import background  # noqa: E402


def client(base: str, until: float, length: int, out: dict, lock: threading.Lock) -> None:
    while time.time() < until:
        sent = time.perf_counter()
        first = None
        try:
            with httpx.stream(
                "GET", base + "/v1/generate/stream", params={"length": length}, timeout=60
            ) as r:
                if r.status_code != 200:
                    with lock:
                        out["errors"][str(r.status_code)] = out["errors"].get(str(r.status_code), 0) + 1
                    time.sleep(0.2)
                    continue
                for line in r.iter_lines():
                    if first is None and line.startswith("data: ") and "finish_reason" not in line:
                        first = time.perf_counter() - sent
                    if line.startswith("event: done"):
                        break
        except httpx.HTTPError as e:
            with lock:
                out["errors"][type(e).__name__] = out["errors"].get(type(e).__name__, 0) + 1
            continue
        with lock:
            out["served"] += 1
            out["chars"] += length
            if first is not None:
                out["first_char_s"].append(first)


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--length", type=int, default=200)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    out: dict = {"served": 0, "chars": 0, "errors": {}, "first_char_s": []}
    lock = threading.Lock()
    with background(args.model) as (base, _):
        until = time.time() + args.seconds
        threads = [
            threading.Thread(target=client, args=(base, until, args.length, out, lock))
            for _ in range(args.clients)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    waits = sorted(out.pop("first_char_s"))
    result = {
        **describe_cpu(),
        "date": time.strftime("%Y-%m-%d"),
        "model": str(args.model),
        "clients": args.clients,
        "seconds": args.seconds,
        "length": args.length,
        **out,
        "chars_per_s": round(out["chars"] / args.seconds),
        "first_char_p50_s": round(statistics.median(waits), 3) if waits else None,
        "first_char_p99_s": round(waits[min(len(waits) - 1, int(0.99 * len(waits)))], 3) if waits else None,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
