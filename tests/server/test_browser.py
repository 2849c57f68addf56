"""The playground page driven in a real headless Chromium (Debian's chromium + chromium-driver, selenium)."""

import time

import pytest

from charnn.server import background as server
from conftest import HAS_CHROMIUM, NO_CHROMIUM, wait_until

pytestmark = pytest.mark.skipif(not HAS_CHROMIUM, reason=NO_CHROMIUM)


def test_type_generate_stop_copy_and_screenshot(browser, model_run, tmp_path):
    from selenium.webdriver.common.by import By

    with server(model_run, "--max-length", "5000") as (base, _):
        browser.get(base + "/")
        find = lambda id_: browser.find_element(By.ID, id_)  # noqa: E731
        wait_until(lambda: "parameters" in find("model-info").text)
        start = find("start")
        start.clear()
        start.send_keys("All:")
        browser.execute_script("document.getElementById('length').value = 5000")
        find("generate").click()
        wait_until(lambda: len(find("output").text) > 40)  # characters arrive while it runs
        assert find("output").text.startswith("All:")
        assert find("stop").is_enabled() and not find("generate").is_enabled()
        find("stop").click()
        wait_until(lambda: find("status").text.startswith("Stopped"))
        stopped_at = len(find("output").text)
        time.sleep(0.5)
        assert len(find("output").text) == stopped_at  # nothing more after Stop
        assert find("generate").is_enabled() and find("copy").is_enabled()
        find("copy").click()
        wait_until(lambda: "Copied" in find("status").text)
        browser.save_screenshot(str(tmp_path / "playground.png"))
    assert (tmp_path / "playground.png").stat().st_size > 10_000


def test_keyboard_only_and_phone_width(browser, model_run, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    with server(model_run) as (base, _):
        browser.set_window_size(390, 844)
        browser.get(base + "/")
        find = lambda id_: browser.find_element(By.ID, id_)  # noqa: E731
        wait_until(lambda: "parameters" in find("model-info").text)
        assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
        find("start").send_keys(Keys.CONTROL, "a")  # keyboard only: select the example text, type over it
        find("start").send_keys("All:")
        find("start").send_keys(Keys.CONTROL, Keys.ENTER)
        wait_until(lambda: "characters in" in find("status").text)  # 500 chars, then done
        assert len(find("output").text) > 500
        browser.switch_to.active_element.send_keys(Keys.TAB)  # focus moves on through the controls
        assert browser.switch_to.active_element.get_attribute("id") == "temperature"
        browser.save_screenshot(str(tmp_path / "phone.png"))
    assert (tmp_path / "phone.png").stat().st_size > 5_000


def test_errors_reach_the_page(browser, model_run):
    from selenium.webdriver.common.by import By

    with server(model_run) as (base, _):
        browser.get(base + "/")
        find = lambda id_: browser.find_element(By.ID, id_)  # noqa: E731
        wait_until(lambda: "parameters" in find("model-info").text)
        find("start").clear()
        find("start").send_keys("Zebra~")
        find("generate").click()
        wait_until(lambda: "never saw" in find("status").text)
        assert find("generate").is_enabled()


def test_the_page_says_how_many_others_are_generating(browser, model_run):
    from selenium.webdriver.common.by import By

    from conftest import long_streams

    with server(model_run, "--max-length", "1000000") as (base, _):
        browser.get(base + "/")
        busy = browser.find_element(By.ID, "busy")
        assert busy.text == ""
        with long_streams(base, 2):
            wait_until(lambda: busy.text == "2 others generating")
        wait_until(lambda: busy.text == "")
