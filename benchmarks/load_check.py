"""Load check of `charnn serve`: N concurrent streaming clients for a while against a model on 127.0.0.1.

    python benchmarks/load_check.py MODEL [--clients 8] [--seconds 30] [--length 200] [--json OUT]
    python benchmarks/load_check.py --suite TINY_MODEL SEED_MODEL [--seconds 30] [--before CHECKOUT]

Starts the server in a subprocess on a free port, then runs N clients (asyncio, plain sockets) that each
open /v1/generate/stream again and again until the time is up, and reports requests served, errors (by
HTTP status, or the exception's name for timeouts and resets), chars/s over all clients, p50/p99 of the
time from sending a request to its first generated char, and the server's memory (RSS) idle and halfway
through. `--suite` runs the table of docs/serve.md in one go: the tiny model with 8, 64 and 256 clients,
the seed model with 64 (and with 256 under --max-streams 256, for the memory), and `charnn generate
--num-samples 64` on the seed model as the reference, and writes it to benchmarks/results/serve-DATE.json;
`--before CHECKOUT` first runs 8 and 64 clients against the server of another checkout (e.g.
`git worktree add /tmp/before 735a01b`), for the before/after table.
Only 127.0.0.1 is ever contacted. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from charnn.device import describe_cpu  # noqa: E402
from charnn.server import background  # noqa: E402

EVENT = b'data: {"text"'  # the start event, then one per generated char


async def one_request(host: str, port: int, length: int, out: dict) -> None:
    """One streamed request over a plain socket, counting its events from the raw bytes (cheap for the
    client, which shares the CPU with the server)."""
    sent, first, events, tail = time.perf_counter(), None, 0, b""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        request = (
            f"GET /v1/generate/stream?length={length} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        writer.write(request.encode())
        head = await reader.readuntil(b"\r\n\r\n")
        status = head.split(b" ", 2)[1].decode()
        if status != "200":
            out["errors"][status] = out["errors"].get(status, 0) + 1
            await reader.read()
            await asyncio.sleep(0.2)
            return
        while b"event: done" not in tail:
            data = await reader.read(65536)
            if not data:
                raise ConnectionResetError("the stream ended without its done event")
            seen = tail + data
            events += seen.count(EVENT) - tail.count(EVENT)
            tail = seen[-64:]
            if first is None and events > 1:
                first = time.perf_counter() - sent
    finally:
        writer.close()
    out["served"] += 1
    out["chars"] += events - 1
    if first is not None:
        out["first_char_s"].append(first)


async def client(host: str, port: int, until: float, length: int, out: dict) -> None:
    while time.time() < until:
        try:
            await asyncio.wait_for(one_request(host, port, length, out), timeout=60)
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as e:
            out["errors"][type(e).__name__] = out["errors"].get(type(e).__name__, 0) + 1


async def clients(base: str, n: int, seconds: float, length: int, out: dict, pid: int) -> dict:
    """Run the clients; halfway through, the server's RSS and /v1/stats."""
    url = urllib.parse.urlsplit(base)
    until = time.time() + seconds
    tasks = [asyncio.create_task(client(url.hostname, url.port, until, length, out)) for _ in range(n)]
    await asyncio.sleep(seconds / 2)
    async with httpx.AsyncClient() as stats:  # not a blocking call: the clients keep running while it waits
        busy = {"rss_mb": rss_mb(pid), **(await stats.get(base + "/v1/stats")).json()}
    await asyncio.gather(*tasks)
    return busy


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def load(model: Path, n_clients: int, seconds: float, length: int, flags: tuple[str, ...] = ()) -> dict:
    """Run `n_clients` streaming clients for `seconds` against `charnn serve MODEL FLAGS`."""
    out: dict = {"served": 0, "chars": 0, "errors": {}, "first_char_s": []}
    with background(model, *flags) as (base, proc):
        idle = rss_mb(proc.pid)
        busy = asyncio.run(clients(base, n_clients, seconds, length, out, proc.pid))
    waits = sorted(out.pop("first_char_s"))
    return {
        "model": str(model),
        "clients": n_clients,
        "seconds": seconds,
        "length": length,
        **out,
        "chars_per_s": round(out["chars"] / seconds),
        "first_char_p50_s": round(statistics.median(waits), 3) if waits else None,
        "first_char_p99_s": round(waits[min(len(waits) - 1, int(0.99 * len(waits)))], 3) if waits else None,
        "server_rss_mb": {"idle": idle, "busy": busy["rss_mb"], "live_streams": busy.get("live_streams")},
        "capacity": busy.get("capacity_streams"),
        "batch_rows": busy.get("batch_rows"),
    }


def generate_reference(model: Path, samples: int, length: int) -> dict:
    """chars/s of `charnn generate --num-samples N` (one process, one batch), the engine's yardstick."""
    cmd = [sys.executable, "-m", "charnn", "generate", str(model), "--num-samples", str(samples)]
    started = time.perf_counter()
    subprocess.run([*cmd, "--length", str(length), "--seed", "1"], check=True, capture_output=True)
    seconds = time.perf_counter() - started
    return {
        "samples": samples,
        "length": length,
        "seconds": round(seconds, 2),
        "chars_per_s": round(samples * length / seconds),
    }


def suite(tiny: Path, seed: Path, seconds: float, length: int, before: Path | None) -> dict:
    """The table of docs/serve.md; with `before`, first the same clients against that checkout's server."""
    result: dict = {}
    if before:
        os.environ["PYTHONPATH"] = str(before / "src")  # the server subprocess imports charnn from there
        result["before"] = {"src": str(before), "runs": [load(tiny, n, seconds, length) for n in (8, 64)]}
        del os.environ["PYTHONPATH"]
    runs = [load(tiny, n, seconds, length) for n in (8, 64, 256)]
    runs.append(load(seed, 64, seconds, length))
    # Memory with 256 live streams of the larger model (the capacity raised to let them all in).
    memory = load(seed, 256, seconds, length, ("--max-streams", "256"))
    reference = generate_reference(seed, 64, 500)
    ratio = round(runs[-1]["chars_per_s"] / reference["chars_per_s"], 2)
    return {
        **result,
        "runs": runs,
        "memory_256_streams": memory,
        "generate_num_samples_64": reference,
        "seed_64_vs_generate": ratio,
    }


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("model", type=Path, nargs="?")
    parser.add_argument("--suite", type=Path, nargs=2, metavar=("TINY_MODEL", "SEED_MODEL"))
    parser.add_argument("--before", type=Path, help="with --suite: a checkout of the version to compare with")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--length", type=int, default=200)
    parser.add_argument("--flags", default="", help="more `charnn serve` flags, e.g. '--max-streams 64'")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--note", default="", help="recorded in the JSON, e.g. 'provisional (shared CPU)'")
    args = parser.parse_args()
    about = {
        **({"note": args.note} if args.note else {}),
        **describe_cpu(),
        "date": time.strftime("%Y-%m-%d"),
    }
    if args.suite:
        result = {**about, **suite(*args.suite, args.seconds, args.length, args.before)}
        args.json = args.json or ROOT / "benchmarks" / "results" / f"serve-{about['date']}.json"
    elif args.model:
        result = {
            **about,
            **load(args.model, args.clients, args.seconds, args.length, tuple(args.flags.split())),
        }
    else:
        parser.error("give MODEL or --suite TINY_MODEL SEED_MODEL")
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
