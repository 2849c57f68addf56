"""The look-inside tab and copy highlighting, driven in a real headless Chromium."""

import httpx
import numpy as np
import pytest

import charnn
from charnn.api import load
from charnn.inspection.trace import trace
from charnn.server import background as server
from conftest import HAS_CHROMIUM, NO_CHROMIUM, PARAGRAPH, TINY, wait_until

pytestmark = pytest.mark.skipif(not HAS_CHROMIUM, reason=NO_CHROMIUM)
TEXT = "All:\nSpeak, speak.\n"


def test_look_inside_colours_the_text_and_shows_the_guesses(browser, model_run, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    loaded = load(model_run)
    expected = trace(loaded.model, loaded.vocab, TEXT)
    with server(model_run) as (base, _):
        browser.get(base + "/")
        find = lambda id_: browser.find_element(By.ID, id_)  # noqa: E731
        wait_until(lambda: "parameters" in find("model-info").text)
        assert not find("look-inside").is_displayed()
        find("tab-inspect").click()
        assert find("look-inside").is_displayed() and not find("controls").is_displayed()
        box = find("inspect-text")
        box.clear()
        box.send_keys(TEXT)
        find("inspect-run").click()
        chars = wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "#inspect-view .ch"))
        assert len(chars) == len(TEXT)
        shown = browser.execute_script("return arguments[0].map((c) => c.style.background)", chars)
        colour_of = (
            "const d = document.createElement('i'); d.style.background = charnnInspect.surprisalColour("
            "arguments[0]); return d.style.background"
        )
        for i in (0, 6, len(TEXT) - 1):  # each char's colour is its surprisal as Python computes it
            assert shown[i] == browser.execute_script(colour_of, round(float(expected.surprisal[i]), 4))
        assert browser.execute_script(colour_of, 0.1) != browser.execute_script(colour_of, 5.0)
        strips = browser.find_elements(By.CSS_SELECTOR, "#inspect-view canvas.unit-strip")
        assert len(strips) == 2 * 6  # two lines, six units under each
        ActionChains(browser).move_to_element(chars[6]).perform()
        tip = wait_until(lambda: find("inspect-tip").is_displayed() and find("inspect-tip").text)
        head, *guesses = tip.splitlines()
        assert f"{expected.surprisal[6]:.3f} nats" in head
        assert len(guesses) == 5
        for line, (c, p) in zip(guesses, expected.guesses[6], strict=True):
            shown = {"\n": "↵", " ": "␣"}.get(c, c)
            assert line == f"{shown} {100 * p:.1f}%"
        assert "inside quotes" not in find("inspect-view").text  # no quotes in this text: nothing to find
        assert "position in line" in find("inspect-view").text
        browser.save_screenshot(str(tmp_path / "inspect.png"))
        box.clear()
        browser.execute_script("arguments[0].value = 'a'.repeat(100000)", box)
        find("inspect-run").click()
        wait_until(lambda: "at most 5000" in find("inspect-status").text)
    assert (tmp_path / "inspect.png").stat().st_size > 10_000


def test_generated_text_shows_its_copied_spans(browser, model_run):
    from selenium.webdriver.common.by import By

    with server(model_run) as (base, _):
        browser.get(base + "/")
        find = lambda id_: browser.find_element(By.ID, id_)  # noqa: E731
        wait_until(lambda: "parameters" in find("model-info").text)
        find("start").clear()
        find("start").send_keys(PARAGRAPH[:60])  # the start is part of the output, copied verbatim
        browser.execute_script("document.getElementById('length').value = 10")
        find("generate").click()
        marks = wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "#output mark.copied"))
        assert marks[0].text.startswith(PARAGRAPH[:50].split("\n")[0])
        assert "corpus.txt, line" in marks[0].get_attribute("title")
        assert "copied spans of 20+" in find("status").text
        assert find("output").text.startswith(PARAGRAPH[:14])


EMOJI = "pi π😀 delta"


@pytest.fixture(scope="module")
def emoji_run(tmp_path_factory):
    """A tiny model whose vocabulary holds an emoji: one char to Python, two UTF-16 units to JavaScript."""
    root = tmp_path_factory.mktemp("emoji")
    (root / "corpus.txt").write_text((PARAGRAPH + EMOJI + "\n") * 40, encoding="utf-8")
    charnn.train(root / "run", data=str(root / "corpus.txt"), max_steps=30, quiet=True, **TINY)
    return root / "run"


def test_look_inside_counts_an_emoji_as_one_char(browser, emoji_run):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    loaded = load(emoji_run)
    expected = trace(loaded.model, loaded.vocab, EMOJI).surprisal
    assert min(abs(np.diff(expected[1:]))) > 0.01  # else a char showing its neighbour's value could pass
    with server(emoji_run) as (base, _):
        browser.get(base + "/")
        find = lambda id_: browser.find_element(By.ID, id_)  # noqa: E731
        wait_until(lambda: "parameters" in find("model-info").text)
        find("tab-inspect").click()
        browser.execute_script("arguments[0].value = arguments[1]", find("inspect-text"), EMOJI)
        find("inspect-run").click()
        chars = wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "#inspect-view .ch"))
        assert [c.get_attribute("textContent") for c in chars] == list(EMOJI)
        assert f": {len(EMOJI)} chars," in browser.find_element(By.CSS_SELECTOR, ".inspect-summary").text
        ActionChains(browser).move_to_element(chars[5]).perform()  # the char after the emoji
        head = wait_until(
            lambda: find("inspect-tip").is_displayed() and find("inspect-tip").text
        ).splitlines()[0]
        nats = head.removeprefix('" ": ').removesuffix(" nats")
        assert head.startswith('" ": ') and abs(float(nats) - expected[5]) < 1e-3, head


def test_copied_spans_after_an_emoji_are_marked_where_they_are(browser, emoji_run):
    from selenium.webdriver.common.by import By

    with server(emoji_run) as (base, _):
        browser.get(base + "/")
        find = lambda id_: browser.find_element(By.ID, id_)  # noqa: E731
        wait_until(lambda: "parameters" in find("model-info").text)
        # "😀 F" is not in the training text, so a copied span starts after the emoji
        browser.execute_script("arguments[0].value = arguments[1]", find("start"), "😀 " + PARAGRAPH[:60])
        browser.execute_script("document.getElementById('length').value = 10")
        find("generate").click()
        marks = wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "#output mark.copied"))
        text = find("output").get_attribute("textContent")
        spans = httpx.post(base + "/v1/copying", json={"text": text, "k": 20}).json()["spans"]
        assert spans and spans[0]["start"] == 2
        assert [m.get_attribute("textContent") for m in marks] == [
            text[s["start"] : s["start"] + s["length"]] for s in spans
        ]
