"""`charnn serve` for real: a uvicorn server on 127.0.0.1 in a subprocess, spoken to over HTTP."""

import json
import socket
import subprocess
import sys
import threading

import httpx
import pytest

from charnn.config import SamplingConfig
from charnn.declare import declared
from charnn.server import background as server
from conftest import PARAGRAPH, assert_clean_error, events, run_cli, wait_until


@pytest.fixture(scope="module")
def api(model_run):
    flags = ("--max-length", "1000000", "--max-running", "1", "--max-waiting", "1")
    with server(model_run, *flags) as (base, _):
        yield base


def test_start_message_names_the_url(model_run):
    with server(model_run) as (base, proc):
        pass
    assert base in proc.stderr.read()


def test_health_model_and_docs(api):
    assert httpx.get(api + "/healthz").json() == {"status": "ok"}
    info = httpx.get(api + "/v1/model").json()
    assert info["model"]["hidden"] == 32 and info["vocab_size"] == len(info["vocab"])
    assert info["training"]["steps"] == 5 and info["limits"]["max_length"] == 1_000_000
    paths = httpx.get(api + "/openapi.json").json()["paths"]
    assert "/v1/generate" in paths
    query = {p["name"]: p["schema"] for p in paths["/v1/generate/stream"]["get"]["parameters"]}
    assert list(query) == [d.name for d in declared(SamplingConfig) if d.name != "num_samples"]
    assert query["top_p"]["anyOf"][0] == {"type": "number", "exclusiveMinimum": 0.0, "maximum": 1.0}
    assert httpx.get(api + "/docs").status_code == 200


def test_generate_is_seeded_and_matches_the_library(api, model_run):
    import charnn

    body = {"start": "All:", "length": 80, "temperature": 0.9, "top_k": 10, "seed": 5}
    first = httpx.post(api + "/v1/generate", json=body).json()
    again = httpx.post(api + "/v1/generate", json=body).json()
    assert first["text"] == again["text"] and first["finish_reason"] == "length"
    assert first["text"] == charnn.generate(model_run, "All:", 80, temperature=0.9, top_k=10, seed=5)
    many = httpx.post(api + "/v1/generate", json={**body, "num_samples": 3}).json()
    assert len(many["texts"]) == 3 and all(t.startswith("All:") and len(t) == 84 for t in many["texts"])


def test_stream_sends_one_event_per_character(api):
    params = {"start": "All:", "length": 60, "seed": 5, "temperature": 0.9, "top_k": 10}
    with httpx.stream("GET", api + "/v1/generate/stream", params=params, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        received = list(events(response))
    assert received[0] == ("start", {"text": "All:"})
    chars = [data["text"] for kind, data in received[1:-1]]
    assert all(kind == "message" for kind, _ in received[1:-1]) and all(len(c) == 1 for c in chars)
    assert received[-1] == ("done", {"finish_reason": "length"})
    body = {"start": "All:", "length": 60, "seed": 5, "temperature": 0.9, "top_k": 10}
    assert "All:" + "".join(chars) == httpx.post(api + "/v1/generate", json=body).json()["text"]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"length": 1_000_001}, "length must be between 0 and 1,000,000, got 1000001"),
        ({"temperature": 0}, "temperature must be in [1e-06, 1,000], got 0"),
        ({"seed": 2**64}, "seed must be between -9,223,372,036,854,775,808 and 18,446,744"),
        ({"seed": 10**400}, "seed must be between"),  # beyond a float: still the bound, not a crash
        ({"top_p": 1.5}, "top_p must be in (0, 1], got 1.5"),
        ({"start": "Zebra~"}, "never saw"),
        ({"length": "lots"}, 'length must be an integer, got \\"lots'),
        (
            {"temperature": 1e39},
            "temperature must be in [1e-06, 1,000], got 1e+39",
        ),  # beyond float32: it once ended every stream
        ({"temprature": 0.5}, "Extra inputs are not permitted"),  # a misspelt name is not left at its default
    ],
)
def test_bad_requests_are_422_with_the_reason(api, body, needle):
    response = httpx.post(api + "/v1/generate", json=body)
    assert response.status_code == 422
    assert needle in json.dumps(response.json())
    stream = httpx.get(api + "/v1/generate/stream", params=body)
    assert stream.status_code == 422 and needle in json.dumps(stream.json())


def test_the_servers_own_limits_are_422_naming_the_limit(model_run):
    with server(model_run, "--max-length", "50", "--max-samples", "2") as (base, _):
        for body, needle in (
            ({"length": 51}, "length 51 is over this server's limit of 50"),
            ({"num_samples": 3, "length": 10}, "num_samples 3 is over this server's limit of 2"),
            ({"start": "a" * 2001, "length": 10}, "length 2001 is over this server's limit of 2000"),
        ):
            response = httpx.post(base + "/v1/generate", json=body)
            assert response.status_code == 422 and needle in response.json()["detail"]
        assert httpx.get(base + "/v1/model").json()["limits"]["max_samples"] == 2
        unasked = httpx.post(base + "/v1/generate", json={"start": "A"})  # the default length, 1,000: cut
        assert unasked.status_code == 200 and len(unasked.json()["text"]) == 51
        with httpx.stream("GET", base + "/v1/generate/stream", params={"start": "A"}) as stream:
            assert stream.status_code == 200
            assert sum(1 for _, data in events(stream) if "text" in data) == 51  # the start, then 50
        assert httpx.post(base + "/v1/generate", json={"length": 50, "num_samples": 2}).status_code == 200


def test_oversized_body_is_413(api):
    response = httpx.post(
        api + "/v1/generate",
        content=b'{"start": "' + b"a" * 20000 + b'"}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413
    chunked = httpx.post(  # no Content-Length: the body comes in chunks
        api + "/v1/generate",
        content=iter([b'{"start": "', *[b"a" * 1000] * 20, b'"}']),
        headers={"content-type": "application/json"},
    )
    assert chunked.status_code == 413
    small = httpx.post(
        api + "/v1/generate",
        content=iter([b'{"start": "All:", ', b'"length": 5, "seed": 1}']),
        headers={"content-type": "application/json"},
    )
    assert small.status_code == 200 and small.json()["text"].startswith("All:")
    host, port = api.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as conn:  # chunks beside a small Content-Length
        conn.sendall(
            b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"".join(b"%x\r\n%s\r\n" % (1000, b"a" * 1000) for _ in range(20))
            + b"0\r\n\r\n"
        )
        assert conn.recv(100).startswith(b"HTTP/1.1 413")


def test_a_client_that_hangs_up_on_a_plain_generate_frees_its_slot(api):
    with pytest.raises(httpx.ReadTimeout):  # it asked for a million chars and gives up after a second
        httpx.post(api + "/v1/generate", json={"length": 1_000_000}, timeout=1.0)
    wait_until(lambda: httpx.get(api + "/v1/stats").json()["live_streams"] == 0, timeout=10)
    assert httpx.post(api + "/v1/generate", json={"length": 10}).status_code == 200


def test_too_many_at_once_get_503_and_disconnect_stops_generation(api):
    """max-running 1, max-waiting 1: one generates, one waits, a third is refused; hanging up frees both."""
    hang_up = threading.Event()
    first_chars: list[str] = []

    def long_stream():
        with httpx.stream("GET", api + "/v1/generate/stream", params={"length": 1_000_000}, timeout=60) as r:
            for _, data in events(r):
                first_chars.append(data.get("text", ""))
                if hang_up.is_set():
                    break  # leaving the with-block closes the connection mid-stream

    def stats():
        return httpx.get(api + "/v1/stats").json()

    running, waiting = threading.Thread(target=long_stream), threading.Thread(target=long_stream)
    running.start()
    wait_until(lambda: stats()["active"] == 1)
    waiting.start()
    wait_until(lambda: stats()["waiting_or_running"] == 2)
    busy = httpx.post(api + "/v1/generate", json={"length": 10})
    assert busy.status_code == 503 and "busy" in busy.json()["detail"] and busy.headers["retry-after"]
    hang_up.set()
    running.join(timeout=30)
    waiting.join(timeout=30)  # it got the freed slot, streamed, and hung up too
    assert not running.is_alive() and not waiting.is_alive()
    wait_until(lambda: stats()["waiting_or_running"] == 0)
    assert stats()["active"] == 0 and len(first_chars) < 1_000_000


def test_time_limit_ends_a_generation(model_run):
    with server(model_run, "--timeout", "0.2", "--max-length", "100000") as (base, _):
        reply = httpx.post(base + "/v1/generate", json={"length": 100000}, timeout=30).json()
    assert reply["finish_reason"] == "time limit" and len(reply["text"]) < 100000


def test_without_fastapi_one_line_says_how_to_install(model_run, tmp_path):
    code = (
        "import sys; sys.modules['fastapi'] = None\n"
        "from charnn.cli import main\n"
        f"sys.exit(main(['serve', {str(model_run)!r}]))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 1
    assert (
        result.stderr.strip().startswith("charnn: error:") and "pip install 'charnn[serve]'" in result.stderr
    )
    assert len(result.stderr.strip().splitlines()) == 1


def test_port_in_use_and_bad_limits_are_one_line_errors(model_run):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        assert_clean_error(run_cli("serve", str(model_run), "--port", port), "cannot listen", port)
    assert_clean_error(run_cli("serve", str(model_run), "--max-length", "0"), "--max-length")


def test_concurrent_requests_do_not_disturb_each_other(api):
    bodies = [{"start": "All:", "length": 300, "seed": seed, "temperature": 1.2} for seed in range(4)]
    alone = [httpx.post(api + "/v1/generate", json=b, timeout=60).json()["text"] for b in bodies]
    together: list = [None] * len(bodies)

    def ask(i):
        together[i] = httpx.post(api + "/v1/generate", json=bodies[i], timeout=60).json().get("text")

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]  # the server runs 1, queues 1
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert together[:2] == alone[:2]
    assert len(set(alone)) == 4


@pytest.mark.parametrize(
    "body",
    [
        b'{"temperature": NaN, "length": 5}',
        b'{"length": 1e400}',
        b'{"temperature": -Infinity, "length": 1}',
        b'{"start": ["\\ud83d"], "length": 3}',
        b'["\\ud83d"]',
        b'{"\\ud83d": 1}',
    ],
)
def test_bodies_json_cannot_echo_are_422_not_500(api, body):
    response = httpx.post(api + "/v1/generate", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.json()["detail"][0]["msg"]


@pytest.mark.parametrize("path", ["/v1/generate", "/v1/inspect"])
def test_a_body_that_is_not_utf8_says_so(api, path):
    body = b'{"start": "\xff\xfe", "text": "\xff"}'
    response = httpx.post(api + path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400 and "not UTF-8" in response.json()["detail"]
    assert httpx.get(api + "/no-such-page").json() == {"detail": "Not Found"}  # other errors as before


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"length": True}, "length must be an integer, got true"),
        ({"greedy": "yes"}, "greedy must be true or false"),
    ],
)
def test_a_json_body_takes_each_value_in_its_own_type(api, body, needle):
    response = httpx.post(api + "/v1/generate", json={"length": 3, **body})
    assert response.status_code == 422 and needle in json.dumps(response.json())


def test_errors_name_the_request_fields_not_the_flags(api):
    detail = httpx.post(api + "/v1/generate", json={"start": "Zebra~", "length": 3}).json()["detail"]
    assert detail.startswith("start holds") and "set skip_unknown" in detail and "--" not in detail


def test_the_model_description_names_the_servers_weights_and_limits(model_run):
    with server(model_run, "--weights", "fp32", "--max-streams", "3", "--stall-timeout", "4") as (base, _):
        info = httpx.get(base + "/v1/model").json()
    assert info["weights"] == "fp32"
    assert info["limits"] == {
        "max_length": 5000,
        "max_samples": 16,
        "max_start": 2000,
        "max_body_bytes": 16 * 1024,
        "capacity_streams": 3,
        "timeout_s": 60.0,
        "stall_timeout_s": 4.0,
    }


def test_a_text_longer_than_the_body_cap_is_checked_for_copies(api):
    text = (PARAGRAPH * 60)[:20_000]  # the training text's own: over the 16 KiB cap of other requests
    response = httpx.post(api + "/v1/copying", json={"text": text, "k": 20})
    assert response.status_code == 200 and response.json()["copied_chars"] > 0.9 * len(text)
    too_long = httpx.post(api + "/v1/copying", json={"text": "a" * 100_001})
    assert too_long.status_code == 422 and "at most 100000 characters" in too_long.text
    huge = httpx.post(api + "/v1/copying", json={"text": "a" * 1_300_000})
    assert huge.status_code == 413


def test_a_model_refused_for_its_weights_serves_with_no_verify(model_run, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    model = tmp_path / "model"
    shutil.copytree(model_run / "model", model)
    tensors = load_file(str(model / "model.safetensors"))
    tensors["head.bias"] += 1.0
    save_file(tensors, str(model / "model.safetensors"))
    assert_clean_error(run_cli("serve", str(model), "--port", "1"), "sha256 does not match", "--no-verify")
    with server(model, "--no-verify") as (base, _):
        assert httpx.post(base + "/v1/generate", json={"length": 3}).status_code == 200


def test_an_ipv6_host_is_written_in_brackets():
    from charnn.server import url

    assert url("::1", 8000) == "http://[::1]:8000" and url("127.0.0.1", 80) == "http://127.0.0.1:80"
