"""The exported web folder in a real headless Chromium, served from 127.0.0.1 by a plain static server."""

from __future__ import annotations

import pytest

import charnn
from charnn.export.folder import ort_web_available
from charnn.export.static import serve_folder
from conftest import HAS_CHROMIUM, NO_CHROMIUM, TINY, wait_until

pytest.importorskip("onnx", reason="the export extra is not installed (pip install 'charnn[export]')")
pytestmark = [
    pytest.mark.skipif(not HAS_CHROMIUM, reason=NO_CHROMIUM),
    pytest.mark.skipif(
        not ort_web_available(), reason="onnxruntime-web is not installed from npm (bash scripts/web_deps.sh)"
    ),
]
LENGTH = 200


@pytest.fixture(scope="module")
def web(model_run, tmp_path_factory):
    from charnn.export.folder import export

    out = tmp_path_factory.mktemp("web") / "site"
    export(model_run, format="web", out=str(out))
    with serve_folder(out) as base:
        yield base


def run_page(browser, base: str, **fields) -> tuple[str, str]:
    """Fill the page's form, generate, and return (output text, status line) once it is done."""
    browser.get(base + "index.html")
    text = lambda id_: browser.execute_script(f"return document.getElementById('{id_}').textContent")  # noqa: E731
    wait_until(lambda: "runs in this tab" in text("model-info"), timeout=60)
    for name, value in fields.items():
        if isinstance(value, bool):
            browser.execute_script(f"document.getElementById('{name}').checked = {str(value).lower()}")
        else:
            browser.execute_script(f"document.getElementById('{name}').value = arguments[0]", value)
    browser.execute_script("document.getElementById('generate').click()")
    status = wait_until(
        lambda: (s := text("status")).startswith(("Done", "Stopped", "Error")) and s, timeout=60
    )
    return text("output"), status


def test_greedy_text_in_the_browser_is_charnn_generates(browser, web, model_run):
    output, status = run_page(browser, web, start="All:", length=LENGTH, greedy=True)
    assert status.startswith(f"Done: {LENGTH} chars"), status
    assert output == charnn.generate(model_run, start="All:", length=LENGTH, greedy=True, weights="fp32")


def test_seeded_sampling_repeats_and_follows_the_settings(browser, web, model_run):
    settings = {"start": "All:", "length": LENGTH, "temperature": "0.9", "top-k": "5", "seed": "7"}
    first, _ = run_page(browser, web, **settings)
    second, _ = run_page(browser, web, **settings)
    other, _ = run_page(browser, web, **{**settings, "seed": "8"})
    assert first == second and first != other
    assert first.startswith("All:") and len(first) == len("All:") + LENGTH
    assert set(first) <= set(charnn.load(model_run).vocab.chars)


def test_unknown_start_characters_are_reported_on_the_page(browser, web):
    _, status = run_page(browser, web, start="Zebra €", length=5)
    assert status.startswith("Error: the start holds characters the model never saw"), status
    assert '"€"' in status


def test_stop(browser, web):
    browser.get(web + "index.html")
    text = lambda id_: browser.execute_script(f"return document.getElementById('{id_}').textContent")  # noqa: E731
    wait_until(lambda: "runs in this tab" in text("model-info"), timeout=60)
    browser.execute_script("document.getElementById('start').value = 'All:'")
    browser.execute_script("document.getElementById('length').value = 100000")
    browser.execute_script("document.getElementById('generate').click()")
    wait_until(lambda: len(text("output")) > 100)
    browser.execute_script("document.getElementById('stop').click()")
    status = wait_until(lambda: (s := text("status")).startswith("Stopped") and s)
    assert int(status.split()[1]) < 100000


def test_the_suggested_start_is_left_out_for_a_model_that_lacks_its_chars(browser, tmp_path):
    from charnn.export.folder import export

    data = tmp_path / "corpus.txt"
    data.write_text("abc cab bca " * 300, encoding="utf-8")
    charnn.train(tmp_path / "run", data=str(data), max_steps=3, quiet=True, **TINY)
    export(tmp_path / "run", format="web", out=str(tmp_path / "site"))
    with serve_folder(tmp_path / "site") as base:
        output, status = run_page(browser, base, length=30)
        assert browser.execute_script("return document.getElementById('start').value") == ""
    assert status.startswith("Done: 30 chars"), status
    assert len(output) == 30 and set(output) <= set(" abc")
