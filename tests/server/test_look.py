"""The look-inside and copying endpoints of a real `charnn serve` on 127.0.0.1."""

import json
import shutil

import httpx
import numpy as np
import pytest

from charnn.api import load
from charnn.inspection.page import inspection
from charnn.server import background as server
from charnn.server.look import MAX_PAGE_CHARS
from conftest import PARAGRAPH


@pytest.fixture(scope="module")
def api(model_run):
    with server(model_run) as (base, _):
        yield base


def test_inspect_returns_what_python_computes(api, model_run):
    text = "All:\nSpeak, speak.\n"
    reply = httpx.post(api + "/v1/inspect", json={"text": text, "units": 4}, timeout=30)
    assert reply.status_code == 200, reply.text
    expected = inspection(load(model_run), text, 4)
    data = reply.json()
    np.testing.assert_allclose(data["surprisal"], expected["surprisal"], atol=1e-3)
    assert data["guesses"] == expected["guesses"] and data["layers"] == expected["layers"]


def test_inspect_refuses_bad_text_with_a_message(api):
    for body, needle in (
        ({"text": ""}, "empty"),
        ({"text": "Zebra~"}, "never saw"),
        ({"text": "a" * (MAX_PAGE_CHARS + 1)}, f"at most {MAX_PAGE_CHARS:,}"),
    ):
        reply = httpx.post(api + "/v1/inspect", json=body, timeout=30)
        assert reply.status_code == 422 and needle in json.dumps(reply.json()), (body, reply.text)


def test_copied_spans_come_with_their_file_and_line(api):
    text = "zz " + PARAGRAPH[:80]
    reply = httpx.post(api + "/v1/copying", json={"text": text, "k": 20}, timeout=30).json()
    (span,) = reply["spans"]
    assert span["start"] == 3 and span["length"] >= 80 - 3  # the paragraph repeats: it may match further
    assert span["file"].endswith("corpus.txt") and (span["line"] - 1) % PARAGRAPH.count("\n") == 0
    generated = httpx.post(
        api + "/v1/generate?copies=20", json={"start": PARAGRAPH[:60], "length": 20, "seed": 1}, timeout=30
    ).json()
    assert generated["copies"][0][0]["start"] == 0 and generated["copies"][0][0]["length"] >= 60
    assert "copies" not in httpx.post(api + "/v1/generate", json={"length": 5}, timeout=30).json()


def test_copying_without_the_training_text_is_a_clear_422(model_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(model_run / "model", run / "model")
    config = json.loads((run / "model" / "config.json").read_text())
    config["training"]["data"] = str(tmp_path / "gone.txt")
    (run / "model" / "config.json").write_text(json.dumps(config))
    with server(run) as (base, _):
        reply = httpx.post(base + "/v1/copying", json={"text": "All:"}, timeout=30)
        assert reply.status_code == 422 and "no longer there" in reply.json()["detail"]
        reply = httpx.post(base + "/v1/generate?copies=20", json={"length": 5}, timeout=30)
        assert reply.status_code == 422
