"""The playground page driven in a real headless Chromium (Debian's chromium + chromium-driver, selenium)."""

import contextlib
import socket
import threading
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


class CuttingProxy:
    """A TCP proxy to `port` on 127.0.0.1 that drops the first stream it carries once `cut` bytes of its
    answer went through, as a lost connection would, and counts the streams asked for through it."""

    def __init__(self, port: int, cut: int):
        self.target, self.cut, self.streams = port, cut, 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.base = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed: the test is over
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            limit: list[int | None] = [None]  # bytes of answer left before the cut, once a stream is asked
            threading.Thread(target=self._up, args=(client, upstream, limit), daemon=True).start()
            threading.Thread(target=self._down, args=(upstream, client, limit), daemon=True).start()

    def _up(self, client: socket.socket, upstream: socket.socket, limit: list) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                if b"/v1/generate/stream" in data:
                    self.streams += 1
                    if self.streams == 1:
                        limit[0] = self.cut
                upstream.sendall(data)

    def _down(self, upstream: socket.socket, client: socket.socket, limit: list) -> None:
        with contextlib.suppress(OSError):
            while data := upstream.recv(4096):
                if limit[0] is not None and len(data) >= limit[0]:
                    client.sendall(data[: limit[0]])
                    break
                if limit[0] is not None:
                    limit[0] -= len(data)
                client.sendall(data)
        for s in (client, upstream):  # both ends at once, as a dropped network link
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)  # wakes the other direction's recv, which close() would not
            s.close()


def test_a_dropped_stream_says_so_and_starts_nothing_more(browser, model_run):
    import httpx
    from selenium.webdriver.common.by import By

    with server(model_run, "--max-length", "20000") as (base, _):
        proxy = CuttingProxy(int(base.rsplit(":", 1)[1]), cut=3000)
        try:
            browser.get(proxy.base + "/")
            find = lambda id_: browser.find_element(By.ID, id_)  # noqa: E731
            wait_until(lambda: "parameters" in find("model-info").text)
            find("start").clear()
            find("start").send_keys("All:")
            browser.execute_script("document.getElementById('length').value = 20000")
            find("generate").click()
            wait_until(lambda: "connection to the server was lost" in find("status").text)
            assert find("status").text.startswith("Stopped:") and find("generate").is_enabled()
            wait_until(lambda: httpx.get(base + "/v1/stats").json()["live_streams"] == 0)
            time.sleep(1.0)  # an EventSource reconnects after a few seconds' wait: it must not
            assert proxy.streams == 1 and httpx.get(base + "/v1/stats").json()["live_streams"] == 0
        finally:
            proxy.listener.close()
