"""The page `charnn inspect` writes, opened in a real headless Chromium: a text with an emoji (one char to
Python, two UTF-16 units to JavaScript) and a text that looks like markup."""

import numpy as np
import pytest

import charnn
from charnn.api import load
from charnn.inspection.trace import trace
from conftest import HAS_CHROMIUM, NO_CHROMIUM, PARAGRAPH, TINY, run_cli, wait_until

pytestmark = pytest.mark.skipif(not HAS_CHROMIUM, reason=NO_CHROMIUM)
EMOJI = "pi π😀 delta"
MARKUP = '<!-- old\n<script src="a.js">'


@pytest.fixture(scope="module")
def odd_run(tmp_path_factory):
    """A tiny model whose vocabulary holds an emoji and markup."""
    root = tmp_path_factory.mktemp("odd")
    text = (PARAGRAPH + EMOJI + "\n" + MARKUP + "</script>\n") * 40
    (root / "corpus.txt").write_text(text, encoding="utf-8")
    charnn.train(root / "run", data=str(root / "corpus.txt"), max_steps=30, quiet=True, **TINY)
    return root / "run"


def open_page(browser, run, text, path):
    """The char spans of the page `charnn inspect` writes for `text`, once it has rendered."""
    from selenium.webdriver.common.by import By

    result = run_cli("inspect", str(run), "--text", text, "--out", str(path))
    assert result.returncode == 0, result.stderr
    browser.get(path.as_uri())
    return wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "#inspect-view .ch"))


def test_each_char_after_an_emoji_carries_its_own_surprisal(browser, odd_run, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    loaded = load(odd_run)
    expected = trace(loaded.model, loaded.vocab, EMOJI).surprisal
    assert min(abs(np.diff(expected[1:]))) > 0.01  # else a char showing its neighbour's value could pass
    chars = open_page(browser, odd_run, EMOJI, tmp_path / "emoji.html")
    assert [c.get_attribute("textContent") for c in chars] == list(EMOJI)
    assert f": {len(EMOJI)} chars," in browser.find_element(By.CSS_SELECTOR, ".inspect-summary").text
    tip = browser.find_element(By.ID, "inspect-tip")
    for i in (4, 5, 6, len(EMOJI) - 1):  # the emoji, the two chars after it, the last char
        ActionChains(browser).move_to_element(chars[i]).perform()
        quoted = f'"{EMOJI[i]}": '
        head = wait_until(lambda q=quoted: tip.is_displayed() and tip.text.startswith(q) and tip.text)
        shown = head.splitlines()[0].removeprefix(quoted)
        assert shown.endswith(" nats") and abs(float(shown.split()[0]) - expected[i]) < 1e-3, (i, shown)


def test_markup_in_the_text_leaves_the_page_working(browser, odd_run, tmp_path):
    chars = open_page(browser, odd_run, MARKUP, tmp_path / "markup.html")
    assert "".join(c.get_attribute("textContent") for c in chars) == MARKUP.replace("\n", "↵")
