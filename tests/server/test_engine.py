"""The serving engine under real concurrent clients: `charnn serve` on 127.0.0.1 in a subprocess."""

import asyncio
import random
import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
import torch

import charnn
from charnn.config import ModelConfig, SamplingConfig, ServeConfig
from charnn.device import cpu_kind
from charnn.nn.model import CharRNN
from charnn.nn.stepper import StepModel
from charnn.sampling import draw_noise, pick, pick_rows
from charnn.server import background as server
from charnn.server.engine import BLOCK, Engine
from charnn.server.metrics import RATE_WINDOW_S
from charnn.server.streams import Stream
from charnn.store.model_dir import save_model
from charnn.text.vocab import Vocab
from conftest import assert_clean_error, events, long_streams, run_cli, wait_until

FORMATS = ["fp32", "int8", *(["bf16"] if cpu_kind() != "fp32" else [])]


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_rows_step_in_a_block_does_not_depend_on_its_neighbours(fmt):
    """The engine's premise: in a block of BLOCK rows, a row's logits and state depend on that row alone."""
    torch.manual_seed(0)
    stepper = StepModel(CharRNN(ModelConfig(vocab_size=40, hidden=64, embedding=16, layers=2)), fmt)
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 40, (BLOCK,), generator=gen)
    state = tuple(torch.randn(2, BLOCK, 64, generator=gen) for _ in range(2))
    logits, new = stepper.step(ids, state)
    for _ in range(4):
        where = torch.randperm(BLOCK, generator=gen)[: BLOCK // 2]  # our rows, at other places
        other_ids = torch.randint(0, 40, (BLOCK,), generator=gen)
        other_state = tuple(torch.randn(2, BLOCK, 64, generator=gen) for _ in range(2))
        other_ids[where] = ids[: BLOCK // 2]
        for o, s in zip(other_state, state, strict=True):
            o[:, where] = s[:, : BLOCK // 2]
        moved, moved_state = stepper.step(other_ids, other_state)
        assert torch.equal(moved[where], logits[: BLOCK // 2])
        for m, n in zip(moved_state, new, strict=True):
            assert torch.equal(m[:, where], n[:, : BLOCK // 2])


def test_pick_rows_picks_what_pick_picks_for_each_row():
    rng = random.Random(0)
    for trial in range(50):
        cfgs = [
            SamplingConfig(
                temperature=rng.choice([0.5, 1.0, 1.4]),
                top_k=rng.choice([None, 1, 5, 100]),
                top_p=rng.choice([None, 0.5, 0.9, 1.0]),
                greedy=rng.random() < 0.2,
            )
            for _ in range(rng.randint(1, 20))
        ]
        logits = torch.randn(len(cfgs), 50, generator=torch.Generator().manual_seed(trial)) * 3
        alone = [pick(logits[i : i + 1], c, torch.Generator().manual_seed(i)) for i, c in enumerate(cfgs)]
        noise = [
            draw_noise(None if c.greedy else torch.Generator().manual_seed(i), 1, 50)
            for i, c in enumerate(cfgs)
        ]
        together = pick_rows(
            logits,
            torch.tensor([c.temperature for c in cfgs]),
            torch.tensor([c.top_k or 50 for c in cfgs]),
            torch.tensor([c.top_p if c.top_p and c.top_p < 1 else 2.0 for c in cfgs]),
            torch.tensor([c.greedy for c in cfgs]),
            torch.cat(noise),
        )
        assert together.tolist() == torch.cat(alone).tolist()


BODIES = [
    {"start": "All:", "length": 150, "seed": 1, "temperature": 1.3},
    {"start": "First", "length": 150, "seed": 2, "top_k": 5},
    {"length": 150, "seed": 3, "top_p": 0.8, "temperature": 0.7},
    {"start": "A", "length": 150, "greedy": True},
    {"start": "All:", "length": 150, "seed": 4, "num_samples": 3},
]


def test_a_seeded_request_gives_the_same_text_alone_or_beside_63_others(model_run):
    with server(model_run, "--max-streams", "80", "--max-length", "100000") as (base, _):
        alone = [httpx.post(base + "/v1/generate", json=b, timeout=60).json()["texts"] for b in BODIES]
        crowd_done = threading.Event()

        def crowd(seed: int) -> None:  # unseeded, different settings, joining and leaving all the time
            # long enough to stay live on a loaded machine, short enough to leave and join again
            body = {"length": 400 + 40 * seed, "temperature": 0.5 + seed / 40, "num_samples": 1 + seed % 2}
            with httpx.Client(timeout=60) as client:
                while not crowd_done.is_set():
                    client.post(base + "/v1/generate", json=body)

        others = [threading.Thread(target=crowd, args=(i,)) for i in range(63 - len(BODIES))]
        for t in others:
            t.start()
        wait_until(lambda: httpx.get(base + "/v1/stats").json()["live_streams"] >= 40, timeout=60)
        beside: list = [None] * len(BODIES)

        def ask(i: int) -> None:
            beside[i] = httpx.post(base + "/v1/generate", json=BODIES[i], timeout=60).json()["texts"]

        ours = [threading.Thread(target=ask, args=(i,)) for i in range(len(BODIES))]
        for t in ours:
            t.start()
        for t in ours:
            t.join()
        crowd_done.set()
        for t in others:
            t.join()
    assert beside == alone
    assert len({t for texts in alone for t in texts}) == 7  # distinct seeds and samples differ


def engine_text(loaded, buffer: int, slow: bool, body: dict) -> list[str]:
    """What a real Engine, in this process, generates for one request whose client reads every step at
    once, or `slow`ly: 20 ms between takes, so that each time the stream's buffer fills and it pauses."""
    engine = Engine(loaded, "fp32", ServeConfig(stream_buffer=buffer))
    stream = Stream(SamplingConfig(**body), body.get("start", ""), timeout=60)
    engine.submit(stream)
    steps, reason, pauses = [], None, 0
    while reason is None:
        time.sleep(0.02 if slow else 0.001)
        with engine.cv:
            pauses += stream.paused_since is not None
        taken, reason = engine.take(stream)
        steps += taken
    engine.shutdown()
    assert reason == "length" and len(steps) == body["length"]
    assert pauses > 0 or not slow  # the slow reader did make the stream wait
    return ["".join(step[k] for step in steps) for k in range(len(steps[0]))]


@pytest.mark.parametrize("body", [BODIES[0], BODIES[2], BODIES[4]])
def test_a_stream_paused_for_a_slow_reader_gives_the_same_text(model_run, body):
    loaded = charnn.load(model_run)
    body = {**body, "length": 60}
    never_paused = engine_text(loaded, 1000, False, body)
    assert engine_text(loaded, 2, True, body) == never_paused


@pytest.mark.parametrize("top_k", [10**6, 2**63, 10**300])
def test_a_top_k_beyond_the_vocabulary_is_none_at_all(model_run, top_k):
    loaded = charnn.load(model_run)
    body = {"start": "All:", "length": 30, "seed": 9}
    assert engine_text(loaded, 1000, False, {**body, "top_k": top_k}) == engine_text(
        loaded, 1000, False, body
    )


def test_a_stream_whose_client_went_away_wakes_its_handler(model_run):
    """A handler that is not streaming waits on the stream's event: ending it must set that too."""

    async def cancelled() -> str | None:
        engine = Engine(charnn.load(model_run), "fp32", ServeConfig(stream_buffer=1))
        engine.wakeups.bind(asyncio.get_running_loop())
        stream = Stream(SamplingConfig(length=100, seed=1), "All:", timeout=60)
        engine.submit(stream)
        await asyncio.wait_for(stream.event.wait(), 10)  # its first char: the full buffer pauses it
        stream.event.clear()
        await asyncio.sleep(0.2)  # nothing more comes while it is paused
        assert not stream.event.is_set()
        engine.cancel(stream)
        await asyncio.wait_for(stream.event.wait(), 10)
        reason = engine.take(stream)[1]
        engine.shutdown()
        return reason

    assert asyncio.run(cancelled()) == "cancelled"


def test_the_counters_count_every_batched_step_and_each_generated_char(model_run):
    engine = Engine(charnn.load(model_run), "fp32", ServeConfig())
    stream = Stream(SamplingConfig(length=3, seed=1), "All:", timeout=60)
    engine.submit(stream)
    wait_until(lambda: engine.take(stream)[1] == "length")
    counts = engine.snapshot()
    engine.shutdown()
    # 4 steps feed "All:", 2 more read the first two chars picked; the third needs no step
    assert (counts["steps_total"], counts["chars_total"], counts["served_total"]) == (6, 3, 1)
    assert counts["steps_per_s"] == round(6 / RATE_WINDOW_S, 1)


def test_capacity_is_503_with_retry_after_and_counted(model_run):
    with server(model_run, "--max-streams", "2", "--max-length", "1000000") as (base, _):
        with long_streams(base, 2):
            wait_until(lambda: httpx.get(base + "/v1/stats").json()["live_streams"] == 2)
            busy = httpx.get(base + "/v1/generate/stream", params={"length": 5})
            assert (
                busy.status_code == 503
                and busy.headers["retry-after"] == "2"
                and "busy" in busy.json()["detail"]
            )
            metrics = httpx.get(base + "/metrics")
            assert metrics.headers["content-type"].startswith("text/plain")
            values = dict(line.split() for line in metrics.text.splitlines() if not line.startswith("#"))
            assert values["charnn_refused_total"] == "1" and values["charnn_live_streams"] == "2"
            assert float(values["charnn_chars_per_s"]) > 0 and values["charnn_capacity_streams"] == "2"
        # leaving the block hangs up: cancel frees the slot, a new request fits again
        wait_until(lambda: httpx.get(base + "/v1/stats").json()["live_streams"] == 0)
        assert httpx.post(base + "/v1/generate", json={"length": 5}).status_code == 200


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks of 1/100 s


def test_a_stalled_client_does_not_hold_up_others_and_is_dropped(model_run):
    flags = ("--max-streams", "2", "--stall-timeout", "1", "--max-length", "1000000")
    with server(model_run, *flags) as (base, proc):
        port = int(base.rsplit(":", 1)[1])
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", port))
        stalled.sendall(b"GET /v1/generate/stream?length=1000000 HTTP/1.1\r\nHost: x\r\n\r\n")  # never read
        wait_until(lambda: httpx.get(base + "/v1/stats").json()["live_streams"] == 1)
        # The other slot keeps serving while the stalled stream holds its own.
        for seed in range(3):
            reply = httpx.post(base + "/v1/generate", json={"length": 300, "seed": seed}, timeout=30).json()
            assert reply["finish_reason"] == "length" and len(reply["text"]) == 300
        # Once its buffer is full for --stall-timeout, the stream is dropped and its slot freed.
        wait_until(lambda: httpx.get(base + "/v1/stats").json()["live_streams"] == 0, timeout=60)
        replies = [httpx.post(base + "/v1/generate", json={"length": 10}) for _ in range(2)]
        assert [r.status_code for r in replies] == [200, 200]
        stalled.close()
        # Idle: the engine waits on a condition, burning no CPU.
        time.sleep(0.5)
        before = _cpu_seconds(proc.pid)
        time.sleep(2)
        assert _cpu_seconds(proc.pid) - before < 0.1


def test_sigterm_ends_live_streams_with_a_final_event(model_run):
    with server(model_run, "--max-length", "1000000") as (base, proc):
        received: list[list] = [[], []]

        def listen(i: int) -> None:
            with httpx.stream(
                "GET", base + "/v1/generate/stream", params={"length": 1_000_000}, timeout=60
            ) as r:
                received[i].extend(events(r))

        listeners = [threading.Thread(target=listen, args=(i,)) for i in range(2)]
        for t in listeners:
            t.start()
        wait_until(lambda: all(len(r) > 10 for r in received))
        proc.send_signal(signal.SIGTERM)
        for t in listeners:
            t.join(timeout=30)
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once done
        assert "Traceback" not in proc.stderr.read()
    assert not any(t.is_alive() for t in listeners)
    for r in received:
        assert r[-1] == ("done", {"finish_reason": "server shutting down"})
        assert len(r) < 1_000_000


def test_older_capacity_flags_still_work_and_clash_clearly(model_run):
    with server(model_run, "--max-running", "1", "--max-waiting", "2") as (base, _):
        assert httpx.get(base + "/v1/stats").json()["capacity_streams"] == 3
    result = run_cli("serve", str(model_run), "--max-streams", "4", "--max-running", "2")
    assert_clean_error(result, "--max-streams replaces --max-running")


def test_streams_being_joined_count_against_the_capacity(model_run):
    """Submitting while the worker joins other streams never admits more than --max-streams (each stream's
    rows must fit the engine's tables)."""
    from charnn.config import ServeConfig
    from charnn.server.engine import Engine
    from charnn.server.streams import Busy, Stream
    from charnn.store.model_dir import load_model

    engine = Engine(load_model(model_run), "fp32", ServeConfig(max_streams=3))
    most, stop = 0, threading.Event()

    def submit_again_and_again() -> None:
        while not stop.is_set():
            try:
                engine.submit(Stream(SamplingConfig(length=2, num_samples=1), "", timeout=30))
            except Busy:
                time.sleep(0.0005)

    threads = [threading.Thread(target=submit_again_and_again) for _ in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        most = max(most, engine.snapshot()["live_streams"])
    stop.set()
    for t in threads:
        t.join()
    engine.shutdown()
    assert engine.counters.served > 50  # streams came and went all the time
    assert most == 3


def test_a_model_whose_outputs_are_not_finite_ends_each_stream_with_the_reason(tmp_path):
    vocab = Vocab.from_text("hello world\n")
    model = CharRNN(ModelConfig(vocab_size=len(vocab), embedding=8, hidden=16))
    with torch.no_grad():
        model.head.bias[3] = float("nan")
    save_model(tmp_path / "model", model, vocab, {})
    with server(tmp_path / "model") as (base, _):
        reply = httpx.post(base + "/v1/generate", json={"start": "he", "length": 50}, timeout=60).json()
        with httpx.stream("GET", base + "/v1/generate/stream", params={"length": 50}, timeout=60) as r:
            streamed = list(events(r))
        assert httpx.get(base + "/healthz").json() == {"status": "ok"}  # the server itself goes on
    for reason in (reply["finish_reason"], streamed[-1][1]["finish_reason"]):
        assert reason.startswith("error: the model's outputs are not finite numbers")
    assert reply["text"] == "he" and [kind for kind, _ in streamed] == ["start", "done"]


def test_a_stream_whose_settings_fail_to_join_ends_alone(model_run):
    engine = Engine(charnn.load(model_run), "fp32", ServeConfig())
    good = Stream(SamplingConfig(length=300, seed=1), "All:", timeout=60)
    engine.submit(good)
    wait_until(lambda: engine.take(good)[0])  # it is live and generating
    cfg = SamplingConfig(length=5, seed=2)
    object.__setattr__(cfg, "temperature", 1e39)  # past the declaration's check: no float32 holds it
    bad = Stream(cfg, "", timeout=60)
    engine.submit(bad)
    assert wait_until(lambda: engine.take(bad)[1]).startswith("error: ")
    assert wait_until(lambda: engine.take(good)[1]) == "length"  # the other stream went on to its end
    engine.shutdown()
