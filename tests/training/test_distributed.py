"""Data-parallel training for real: torchrun, 2 CPU processes on gloo, a tiny model."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import charnn
from charnn.device import cpu_kind
from charnn.errors import ConfigError
from charnn.store.rundir import RunDir
from charnn.training.distributed import Ranks, is_peer_failure
from conftest import TINY_FLAGS, run_cli

FLAGS = [*TINY_FLAGS, "--batch-size", "8", "--log-every", "1", "--eval-every", "4", "--dist-timeout", "30s"]


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("a quick brown fox jumps over the lazy dog\nthe dog sleeps.\n" * 300)
    return path


def torchrun(*args: str, cwd: Path, nproc: int = 2, timeout: float = 180, wait: bool = True):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(nproc),
        "--master_port",
        str(_free_port()),
        "-m",
        "charnn",
        "train",
        *args,
    ]
    if not wait:
        return subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def why(proc: subprocess.CompletedProcess) -> str:
    """What a failed torchrun said: the ranks' own error lines (its summary hides them), then its tail."""
    marks = ("terminate", "what()", "Error", "charnn:", "Abort", "Signal")
    own = [line for line in proc.stderr.splitlines() if any(m in line for m in marks)]
    return "\n".join(own[:40]) + "\n...\n" + proc.stderr[-1500:]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def max_diff(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


CURRICULA = ["--scheduled-sampling", "0.5", "--seq-len-warmup", "5"]


@pytest.mark.parametrize(
    ("batching", "curricula"), [("windows", []), ("stream", []), ("stream", CURRICULA)], ids=str
)
def test_two_ranks_of_half_a_batch_equal_one_process(tmp_path, corpus, batching, curricula):
    common = ["--data", str(corpus), "--max-steps", "8", "--batching", batching, *FLAGS, *curricula]
    single = run_cli("train", "--out", "one", *common, cwd=tmp_path)
    assert single.returncode == 0, single.stderr
    double = torchrun("--out", "two", *common, cwd=tmp_path)
    assert double.returncode == 0, why(double)
    step = "checkpoints/step-000000008"
    diff = max_diff(weights(tmp_path / "one" / step), weights(tmp_path / "two" / step))
    print(f"{batching}: 2 ranks x 4 vs 1 x 8, max weight difference after 8 steps {diff:.2e}")
    assert diff < 1e-5
    one = [x for x in (tmp_path / "one/metrics.jsonl").read_text().splitlines() if "val_loss" in x]
    two = [x for x in (tmp_path / "two/metrics.jsonl").read_text().splitlines() if "val_loss" in x]
    assert len(one) == len(two) >= 2  # only rank 0 wrote: one line per evaluation, not two
    for a, b in zip(one, two, strict=True):  # sharded validation reduces to the single-process figure
        assert json.loads(a)["val_loss"] == pytest.approx(json.loads(b)["val_loss"], abs=1e-5)
    logged = [
        [json.loads(x) for x in (tmp_path / r / "metrics.jsonl").read_text().splitlines()]
        for r in ("one", "two")
    ]
    losses = [[m["loss"] for m in run if "loss" in m] for run in logged]
    assert losses[0] and losses[1] == pytest.approx(
        losses[0], abs=1e-5
    )  # the whole batch's, not rank 0's rows
    assert "Step 1 " in double.stdout and double.stdout.count("Step 1 ") == 1  # rank 0 alone reports
    assert double.stderr.count("trained 8 steps") == 1, double.stderr


@pytest.mark.skipif(cpu_kind() == "fp32", reason="this CPU has no native bf16")
@pytest.mark.parametrize("kernel", ["pytorch", "charnn-bf16"])
def test_bf16_on_two_ranks_tracks_one_process(tmp_path, corpus, kernel):
    common = [
        "--data",
        str(corpus),
        "--max-steps",
        "8",
        *FLAGS,
        "--precision",
        "bf16",
        "--lstm-kernel",
        kernel,
    ]
    assert run_cli("train", "--out", "one", *common, cwd=tmp_path).returncode == 0
    double = torchrun("--out", "two", *common, cwd=tmp_path)
    assert double.returncode == 0, why(double)
    step = "checkpoints/step-000000008"
    diff = max_diff(weights(tmp_path / "one" / step), weights(tmp_path / "two" / step))
    print(f"bf16, {kernel} LSTM: 2 ranks x 4 vs 1 x 8, max weight difference after 8 steps {diff:.2e}")
    assert diff < 5e-3  # bf16 rounding of half-batch gradients, averaged in fp32
    assert json.loads((tmp_path / "two" / step / "state.json").read_text())["lstm_kernel"] == kernel


def test_a_two_rank_stream_run_saves_every_streams_state_and_resumes_exactly_on_one_process(tmp_path, corpus):
    common = ["--data", str(corpus), "--batching", "stream", "--layers", "2", *FLAGS, "--save-every", "4"]
    single = run_cli("train", "--out", "one", *common, "--max-steps", "8", cwd=tmp_path)
    assert single.returncode == 0, single.stderr
    double = torchrun("--out", "two", *common, "--max-steps", "4", cwd=tmp_path)
    assert double.returncode == 0, why(double)
    step = "checkpoints/step-000000004"
    one, two = (load_file(str(tmp_path / run / step / "optimizer.safetensors")) for run in ("one", "two"))
    carried = [k for k in one if k.startswith("loop.carry")]
    assert carried and all(two[k].shape == one[k].shape == (2, 8, 32) for k in carried)  # all 8 streams
    assert max(float((one[k] - two[k]).abs().max()) for k in carried) < 1e-5
    resumed = run_cli("train", "--out", "two", "--resume", "--max-steps", "8", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    step = "checkpoints/step-000000008"
    assert max_diff(weights(tmp_path / "one" / step), weights(tmp_path / "two" / step)) < 1e-5


def test_a_killed_two_rank_run_resumes_on_one_process(tmp_path, corpus):
    common = ["--data", str(corpus), "--max-steps", "100000", "--save-every", "2", *FLAGS]
    proc = torchrun("--out", "run", *common, cwd=tmp_path, wait=False)
    deadline = time.time() + 120
    while time.time() < deadline and not any((tmp_path / "run/checkpoints").glob("step-00000000[4-9]")):
        time.sleep(0.2)
    workers = _children(proc.pid)
    assert workers, "no torchrun workers found"
    os.kill(workers[-1], signal.SIGKILL)  # one rank dies; torchrun must end the other one
    proc.communicate(timeout=90)
    assert proc.returncode != 0
    newest = int(sorted((tmp_path / "run/checkpoints").iterdir())[-1].name[5:])
    result = run_cli("train", "--out", "run", "--resume", "--max-steps", str(newest + 3), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"trained {newest + 3} steps" in result.stderr


def test_a_failing_rank_does_not_leave_the_others_hanging(tmp_path, corpus):
    """Rank 1 raises in the middle of training while rank 0 waits on it in a collective: both end (within the
    subprocess's time limit, well under --dist-timeout plus torchrun's own)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(_free_port()),
        str(Path(__file__).parent / "rank_failure.py"),
        "train",
        "--data",
        str(corpus),
        "--out",
        "run",
        "--max-steps",
        "50",
        *FLAGS,
    ]
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "rank 1 fails on purpose" in result.stderr
    assert "charnn: error: another process of this run stopped" in result.stderr  # rank 0: one clear line


def test_global_batch_must_split_evenly():
    assert Ranks(1, 2).rows(8) == slice(4, 8)
    with pytest.raises(ConfigError, match="over 3 processes .*: run 1, 2, 4, 8 processes, or, for a new run"):
        Ranks(0, 3).rows(8)


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def test_two_ranks_stop_together_on_a_time_budget_and_on_sigterm(tmp_path, corpus):
    result = torchrun("--out", "budget", "--data", str(corpus), "--time-budget", "2s", *FLAGS, cwd=tmp_path)
    assert result.returncode == 0, why(result)
    assert "trained" in result.stderr and (tmp_path / "budget/model/model.safetensors").exists()
    proc = torchrun(
        "--out", "run", "--data", str(corpus), "--max-steps", "100000", *FLAGS, cwd=tmp_path, wait=False
    )
    deadline = time.time() + 120
    while time.time() < deadline and not (tmp_path / "run/metrics.jsonl").exists():
        time.sleep(0.2)
    time.sleep(1)
    proc.send_signal(signal.SIGTERM)  # torchrun passes it on to both ranks
    _, err = proc.communicate(timeout=90)
    assert err.count("stopped by SIGTERM") == 1 and "checkpoint saved to" in err, err  # rank 0 alone says it
    step = int(sorted((tmp_path / "run/checkpoints").iterdir())[-1].name[5:])
    assert step > 0
    resumed = run_cli("train", "--out", "run", "--resume", "--max-steps", str(step + 2), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr


@pytest.mark.parametrize(("rank", "world"), [("0", "0"), ("0", "-2"), ("1", "1"), ("-1", "2")])
def test_ranks_torchrun_never_sets_are_refused_before_anything_runs(
    tmp_path, corpus, monkeypatch, rank, world
):
    """WORLD_SIZE=-2 once trained on no rows at all and saved a 'best val loss 0.0000' model."""
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setenv("WORLD_SIZE", world)
    with pytest.raises(
        ConfigError, match=f"RANK {rank} and WORLD_SIZE {world} must have 0 <= RANK < WORLD_SIZE"
    ):
        charnn.train(tmp_path / "run", data=str(corpus), max_steps=2, quiet=True)
    assert not (tmp_path / "run").exists()


def test_a_dist_timeout_past_what_a_collective_can_wait_is_refused(tmp_path, corpus):
    with pytest.raises(ConfigError, match="--dist-timeout must be"):
        charnn.train(tmp_path / "run", data=str(corpus), max_steps=2, quiet=True, dist_timeout="99999999h")


def test_what_gloo_says_when_a_rank_was_killed_outright_is_a_peer_failure():
    """After a SIGKILL (the OOM killer, a lost node) gloo reports a reset connection, not a closed one."""
    killed = RuntimeError(
        "[gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:6055: Connection reset by peer"
    )
    assert is_peer_failure(killed, Ranks(0, 2)) and not is_peer_failure(killed, Ranks(0, 1))
    assert not is_peer_failure(RuntimeError("shape mismatch"), Ranks(0, 2))


def by_hand(cwd: Path, *per_rank: list[str]) -> list[subprocess.CompletedProcess]:
    """The processes of one job started by hand, each with its own flags (as the nodes of a multi-machine
    job may be given different commands), each told its RANK and WORLD_SIZE as torchrun would."""
    port = str(_free_port())
    procs = []
    for rank, flags in enumerate(per_rank):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "RANK": str(rank), "WORLD_SIZE": str(len(per_rank))}
        env |= {"LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        cmd = [sys.executable, "-m", "charnn", "train", "--quiet", *flags]
        procs.append(
            subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    return [subprocess.CompletedProcess(p.args, p.wait(timeout=120), *p.communicate()) for p in procs]


def test_processes_started_with_different_settings_or_texts_are_refused_on_every_rank(tmp_path, corpus):
    """They trained on, their weights drifting apart (a different --lr or text), or failed with internal
    errors (a different shape); a rank without the text left the other with an internal error."""
    common = ["--out", "run", "--max-steps", "3", *FLAGS]
    cases = {
        "settings": (["--data", str(corpus)], ["--data", str(corpus), "--lr", "0.01"]),
        "no text": (["--data", str(corpus)], ["--data", str(tmp_path / "missing.txt")]),
    }
    for case, (first, second) in cases.items():
        results = by_hand(tmp_path, [*common, *first], [*common, *second])
        for rank, result in enumerate(results):
            assert result.returncode == 1 and "internal error" not in result.stderr, (
                case,
                rank,
                result.stderr,
            )
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("charnn: error: "), (case, rank, result.stderr)
        said = [r.stderr for r in results]
        if case == "settings":
            assert all("started with different settings or texts" in s for s in said), said
        else:
            assert "missing.txt" in said[1] and "another process of this run failed while starting" in said[0]
        assert not RunDir(tmp_path / "run").checkpoints()


def test_a_process_whose_peers_never_join_says_so_after_the_timeout(tmp_path, corpus):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}
    env |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    args = [
        "train",
        "--out",
        "run",
        "--data",
        str(corpus),
        "--max-steps",
        "2",
        *FLAGS,
        "--dist-timeout",
        "3s",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "charnn", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert "the 2 processes of this run did not all join within --dist-timeout" in result.stderr
