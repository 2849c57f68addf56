"""`charnn serve`'s "run in my browser" switch in headless Chromium: the tab generates, not the server."""

from __future__ import annotations

import json
import os
import urllib.request

import pytest

from charnn.export.folder import ort_web_available
from charnn.server import background as server
from conftest import HAS_CHROMIUM, NO_CHROMIUM, wait_until

pytest.importorskip("onnx", reason="the export extra is not installed (pip install 'charnn[export]')")
pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'charnn[serve]')")
needs_ort_web = pytest.mark.skipif(
    not ort_web_available(), reason="onnxruntime-web is not installed from npm (bash scripts/web_deps.sh)"
)


def served(base: str) -> int:
    with urllib.request.urlopen(base + "/v1/stats") as reply:
        return json.load(reply)["served"]


@pytest.mark.skipif(not HAS_CHROMIUM, reason=NO_CHROMIUM)
@needs_ort_web
def test_run_in_my_browser(browser, model_run, tmp_path):
    with server(model_run) as (base, _):
        browser.get(base + "/")
        text = lambda id_: browser.execute_script(f"return document.getElementById('{id_}').textContent")  # noqa: E731
        wait_until(lambda: "parameters" in text("model-info"))
        browser.execute_script("document.getElementById('in-browser').click()")
        wait_until(lambda: "runs in this tab" in text("status"), timeout=60)
        for name, value in (("start", "All:"), ("length", "300"), ("seed", "3")):
            browser.execute_script(f"document.getElementById('{name}').value = arguments[0]", value)
        browser.execute_script("document.getElementById('generate').click()")
        status = wait_until(
            lambda: (s := text("status")).startswith(("Generated", "Error")) and s, timeout=60
        )
        assert status.startswith("Generated 300 characters in this browser"), status
        first = text("output")
        assert first.startswith("All:") and len(first) == 304
        browser.execute_script("document.getElementById('generate').click()")
        wait_until(lambda: text("status").startswith("Generated"))
        assert text("output") == first  # same seed, same text
        assert served(base) == 0  # the server generated nothing


def test_the_status_says_why_the_switch_cannot_work(model_run, tmp_path):
    empty = tmp_path / "dist"
    empty.mkdir()
    os.environ["CHARNN_ORT_WEB"] = str(empty)
    try:
        with server(model_run) as (base, _), urllib.request.urlopen(base + "/browser/status") as reply:
            state = json.load(reply)
    finally:
        del os.environ["CHARNN_ORT_WEB"]
    assert state["available"] is False and "onnxruntime-web" in state["reason"]
