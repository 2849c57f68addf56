"""Shared fixtures: small real corpora, tiny settings, and a way to run the real CLI."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch

from cli_server import ForkServer

if TYPE_CHECKING:
    import httpx

# One thread per test process: the tiny models gain nothing from more, and two test workers on two cores
# must not oversubscribe them (OpenMP threads spinning against each other slow everything down).
torch.set_num_threads(1)
os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep encoded corpora and downloads of the tests (and their subprocesses) out of the user's cache."""
    os.environ["CHARNN_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))


TINY_FLAGS = [
    "--hidden",
    "32",
    "--embedding",
    "16",
    "--seq-len",
    "32",
    "--batch-size",
    "8",
    "--precision",
    "fp32",
]
TINY = {"hidden": 32, "embedding": 16, "seq_len": 32, "batch_size": 8, "precision": "fp32", "log_every": 10}

PARAGRAPH = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
    "All:\nSpeak, speak.\n\n"
    "First Citizen:\nYou are all resolved rather to die than to famish?\n\n"
    "All:\nResolved. resolved.\n\n"
)


@pytest.fixture
def corpus_file(tmp_path: Path) -> Path:
    """A short English text file (about 20 KB)."""
    path = tmp_path / "corpus.txt"
    path.write_text(PARAGRAPH * 100, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained once for the whole session on a short text."""
    import charnn

    root = tmp_path_factory.mktemp("trained")
    data = root / "corpus.txt"
    data.write_text(PARAGRAPH * 100, encoding="utf-8")
    charnn.train(root / "run", data=str(data), max_steps=60, quiet=True, **TINY)
    return root / "run"


class FakeClock:
    """A clock for time budgets: each reading is `tick` seconds after the one before."""

    def __init__(self, tick: float):
        self.tick, self.now = tick, 0.0

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


@contextmanager
def busy_cores() -> Iterator[None]:
    """For as long as the block runs, the calling thread shares one core with two other programs that keep
    it busy (which end themselves after a minute, should this process die first)."""
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("this system cannot pin a process to a core")
    spin = [sys.executable, "-c", "import time\nend = time.time() + 60\nwhile time.time() < end: pass"]
    cores = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cores)})  # this thread, and the programs it starts
    spinners = []
    try:
        spinners = [subprocess.Popen(spin) for _ in range(2)]
        time.sleep(0.2)  # let them start
        yield
    finally:
        os.sched_setaffinity(0, cores)
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def _cli_env() -> dict[str, str]:
    """The environment of a `python -m charnn` run: the test process's, less CHARNN_DEBUG, with unbuffered
    utf-8 output."""
    env = {k: v for k, v in os.environ.items() if k != "CHARNN_DEBUG"}
    env["PYTHONIOENCODING"] = "utf-8"
    env["PYTHONUNBUFFERED"] = "1"
    return env


# run_cli forks each command from a process that has imported torch and charnn once (cli_server.py) rather
# than starting an interpreter for it; CHARNN_TEST_SUBPROCESS=1 starts one per command, as before.
FORK_SERVER = None
if hasattr(os, "pidfd_open") and not os.environ.get("CHARNN_TEST_SUBPROCESS"):
    FORK_SERVER = ForkServer(_cli_env())
    atexit.register(FORK_SERVER.close)


def run_cli(
    *args: str,
    cwd: Path | None = None,
    timeout: float = 120,
    stdin: str | None = None,
) -> subprocess.CompletedProcess:
    """Run `python -m charnn ARGS` (a child of the fork server, else a fresh interpreter) and capture its
    output as text."""
    env = _cli_env()
    if FORK_SERVER is not None:
        return FORK_SERVER.run(list(args), cwd, timeout, stdin, env)
    return subprocess.run(
        [sys.executable, "-m", "charnn", *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        cwd=cwd,
        timeout=timeout,
        env=env,
        input=stdin,
    )


def assert_clean_error(result: subprocess.CompletedProcess, *needles: str, code: int = 1) -> None:
    """A user error: the given exit code, one stderr line starting 'charnn: error:', no traceback."""
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("charnn: error: "), result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture(scope="module")
def model_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained run of the module's own, to generate from or to damage."""
    import charnn

    root = tmp_path_factory.mktemp("model")
    (root / "corpus.txt").write_text(PARAGRAPH * 60, encoding="utf-8")
    charnn.train(root / "run", data=str(root / "corpus.txt"), max_steps=5, quiet=True, **TINY)
    return root / "run"


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
HAS_CHROMIUM = bool(CHROMIUM and DRIVER)
NO_CHROMIUM = "Chromium or chromedriver not installed (.ci/run and scripts/test.sh install them with apt)"


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        "--window-size=1200,900",
    ):
        options.add_argument(flag)
    with tempfile.TemporaryDirectory() as profile:
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(service=Service(DRIVER), options=options)
        try:
            yield driver
        finally:
            driver.quit()


def wait_until(condition, timeout: float = 20.0):
    """The first true value of `condition()`, polled every 50 ms; fails the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)
    return value


def events(response: httpx.Response) -> Iterator[tuple[str, dict]]:
    """(event, data) pairs of a Server-Sent Events response, as they arrive."""
    kind, data = "message", None
    for line in response.iter_lines():
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            data = json.loads(line[6:])
        elif line == "" and data is not None:
            yield kind, data
            kind, data = "message", None


@contextmanager
def long_streams(base: str, n: int) -> Iterator[None]:
    """`n` clients each streaming a very long generation from the server at `base` until the block ends,
    when they hang up and are waited for."""
    import httpx

    hang_up = threading.Event()

    def stream() -> None:
        with httpx.stream("GET", base + "/v1/generate/stream", params={"length": 1_000_000}, timeout=60) as r:
            for _ in events(r):
                if hang_up.is_set():
                    break

    clients = [threading.Thread(target=stream) for _ in range(n)]
    for t in clients:
        t.start()
    try:
        yield
    finally:
        hang_up.set()
        for t in clients:
            t.join(timeout=30)


@contextmanager
def read_only_folder(tmp_path: Path) -> Iterator[Path]:
    """A folder on a read-only tmpfs, unmounted afterwards; skips the test where mounting needs root."""
    disk = tmp_path / "ro"
    disk.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(disk)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip("cannot mount a read-only tmpfs here; needs root")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


@contextmanager
def tmpfs(path: Path, size_kb: int):
    """A real, tiny filesystem to fill up or make read-only (needs root, as in CI)."""
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def tiny_loop(folder: Path, corpus: Path, prepare: bool = True, clock=None, **train):
    """A training Loop of the tiny model on `corpus` in run folder `folder` (prepared as a new run unless
    not `prepare`), TrainConfig `train` on top of TINY's."""
    from charnn.config import ModelConfig, TrainConfig
    from charnn.store.rundir import RunDir
    from charnn.text.corpus import load_corpus
    from charnn.training.loop import Loop
    from charnn.training.progress import Reporter

    data = load_corpus(str(corpus))
    tiny = {k: v for k, v in TINY.items() if k not in ("hidden", "embedding")}
    cfg = TrainConfig(data=str(corpus), **{**tiny, **train})
    model_cfg = ModelConfig(vocab_size=len(data.vocab), hidden=TINY["hidden"], embedding=TINY["embedding"])
    run = RunDir(folder)
    if prepare:
        run.prepare(resume=False, overwrite=False)
    extra = {"clock": clock} if clock else {}
    return Loop.create(run, model_cfg, cfg, data, "seed", Reporter(quiet=True), **extra)


def ctrl_c_in_step(loop, step: int, presses: int) -> None:
    """Make the user press Ctrl-C `presses` times (real SIGINTs) while `loop` runs step `step`, just after its
    optimizer step."""
    import signal

    real_step = loop.train_step.optimizer.step

    def step_then_ctrl_c(*args, **kwargs):
        result = real_step(*args, **kwargs)
        if loop.progress.step == step - 1:
            for _ in range(presses):
                os.kill(os.getpid(), signal.SIGINT)
        return result

    loop.train_step.optimizer.step = step_then_ctrl_c
