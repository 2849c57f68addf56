"""Take docs/inspect.png: the serve page's "look inside" tab on a model, in headless Chromium.

python scripts/screenshot_inspect.py MODEL [--out docs/inspect.png]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from charnn.server import background  # noqa: E402

TEXT = """First Citizen:
Before we proceed any further, hear me speak.

All:
Speak, speak.

MENENIUS:
Why, masters, my good friends, mine honest neighbours,
Will you undo yourselves?
"""


def main() -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "inspect.png")
    args = parser.parse_args()
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,1100"):
        options.add_argument(flag)
    with tempfile.TemporaryDirectory() as profile, background(args.model) as (base, _):
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
        try:
            driver.get(base + "/")
            driver.find_element(By.ID, "tab-inspect").click()
            box = driver.find_element(By.ID, "inspect-text")
            box.clear()
            box.send_keys(TEXT)
            driver.find_element(By.ID, "inspect-run").click()
            for _ in range(200):
                chars = driver.find_elements(By.CSS_SELECTOR, "#inspect-view .ch")
                if chars:
                    break
                time.sleep(0.1)
            else:
                raise SystemExit(driver.find_element(By.ID, "inspect-status").text)
            ActionChains(driver).move_to_element(chars[TEXT.index("speak.") + 2]).perform()
            time.sleep(0.3)
            driver.save_screenshot(str(args.out))
        finally:
            driver.quit()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
