"""Batch-1 generation speed of an exported model: onnxruntime on the CPU beside charnn's own generator (same
model, same process), and onnxruntime-web in headless Chromium, served from 127.0.0.1.

    python benchmarks/export_speed.py [--model RUN] [--chars 3000] [--screenshot PNG] [--json OUT]

Without --model it measures a model of the `small` preset's shape (LSTM 512, embedding 64, Shakespeare's 65
chars) with its initial weights: speed depends on the shape, not on what the weights learned. Writes the JSON
to benchmarks/results/export_speed-DATE-CPUKIND-MODEL.json too. --screenshot saves the page after generating.
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
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import charnn  # noqa: E402
from charnn.config import ModelConfig  # noqa: E402
from charnn.device import cpu_kind, describe_cpu  # noqa: E402
from charnn.export.folder import export  # noqa: E402
from charnn.export.runtime import OnnxStepper  # noqa: E402
from charnn.export.static import serve_folder  # noqa: E402
from charnn.nn.model import CharRNN  # noqa: E402
from charnn.presets import PRESETS  # noqa: E402
from charnn.store.model_dir import save_model  # noqa: E402
from charnn.text.corpus import SHAKESPEARE, load_corpus  # noqa: E402


def small_model(folder: Path) -> Path:
    """A model folder of the small preset's shape, with its initial weights."""
    shape = {k: v for k, v in PRESETS["small"].items() if k in ("cell", "layers", "hidden", "embedding")}
    vocab = load_corpus(SHAKESPEARE).vocab
    torch.manual_seed(0)
    save_model(folder, CharRNN(ModelConfig(vocab_size=len(vocab), **shape)), vocab, {"data": SHAKESPEARE})
    return folder


def charnn_speed(model: Path, chars: int, weights: str) -> float:
    loaded = charnn.load(model)
    charnn.generate(loaded, start="\n", length=50, seed=1, weights=weights)  # warm-up
    t = time.perf_counter()
    charnn.generate(loaded, start="\n", length=chars, seed=1, weights=weights)
    return chars / (time.perf_counter() - t)


def ort_speed(folder: Path, chars: int) -> float:
    onnx = OnnxStepper(folder, threads=torch.get_num_threads())
    onnx.greedy("\n", 50)  # warm-up
    rng, state = np.random.default_rng(1), onnx.zero_state(1)
    ids = np.array([0])
    t = time.perf_counter()
    for _ in range(chars):
        logits, state = onnx.step(ids, state)
        p = np.exp(logits[0] - logits[0].max())
        ids = np.array([rng.choice(len(p), p=p / p.sum())])
    return chars / (time.perf_counter() - t)


def browser_speed(site: Path, chars: int, screenshot: Path | None) -> dict:
    from conftest import browser as chromium  # the tests' headless Chromium, as a plain generator

    driver_gen = chromium.__wrapped__()
    driver = next(driver_gen)
    try:
        with serve_folder(site) as base:
            driver.get(base + "index.html")
            text = lambda id_: driver.execute_script(f"return document.getElementById('{id_}').textContent")  # noqa: E731
            wait(lambda: "runs in this tab" in text("model-info"))
            driver.execute_script("document.getElementById('length').value = arguments[0]", chars)
            driver.execute_script("document.getElementById('seed').value = 1")
            driver.execute_script("document.getElementById('generate').click()")
            status = wait(lambda: (s := text("status")).startswith(("Done", "Error")) and s)
            if screenshot:
                driver.save_screenshot(str(screenshot))
            version = driver.capabilities.get("browserVersion")
    finally:
        next(driver_gen, None)
    if not status.startswith("Done"):
        raise SystemExit(f"the page failed: {status}")
    count, seconds = int(status.split()[1]), float(status.split()[4])
    return {"chars_per_s": count / seconds, "chars": count, "chromium": version, "status": status}


def wait(condition, timeout: float = 600.0):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting for the page")
        time.sleep(0.1)
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a run or model folder (default: the small preset's shape)")
    parser.add_argument("--chars", type=int, default=3000)
    parser.add_argument("--screenshot", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.model) if args.model else small_model(Path(tmp) / "small")
        export(model, format="web", out=str(Path(tmp) / "site"))
        site = Path(tmp) / "site"
        result = {
            "machine": describe_cpu(),  # before the browser part: the tests' conftest sets one torch thread
            "model": args.model or "small preset's shape (initial weights)",
            "config": charnn.load(model).config.to_dict(),
            "chars": args.chars,
            "exported_bytes": {p.name: p.stat().st_size for p in sorted(site.iterdir())},
            "charnn_fp32_chars_per_s": charnn_speed(model, args.chars, "fp32"),
            "charnn_auto_chars_per_s": charnn_speed(model, args.chars, "auto"),
            "onnxruntime_cpu_chars_per_s": ort_speed(site, args.chars),
            "browser": browser_speed(site, args.chars, args.screenshot),
        }
    import onnxruntime

    result |= {
        "onnxruntime": onnxruntime.__version__,
        "date": datetime.date.today().isoformat(),
        "load_average": [round(x, 2) for x in os.getloadavg()],  # other work on the cores skews the figures
    }
    text = json.dumps(result, indent=2)
    print(text)
    label = Path(args.model).name if args.model else "small"
    out = ROOT / "benchmarks" / "results" / f"export_speed-{result['date']}-{cpu_kind()}-{label}.json"
    for path in (out, args.json):
        if path:
            path.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
