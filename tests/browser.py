"""Debian's chromium driven headless through Selenium and Debian's chromedriver (both installed by
scripts/install-test-tools.sh). The flags keep chromium off the network: this machine's network is closed."""
from __future__ import annotations

from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--force-device-scale-factor=1")


def chromium(profile: Path, width: int = 1400, height: int = 1000, insecure_tls: bool = False) -> webdriver.Chrome:
    """A fresh headless chromium with its own profile folder."""
    opts = Options()
    opts.binary_location = CHROMIUM
    for flag in FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={profile}")
    opts.add_argument(f"--window-size={width},{height}")
    if insecure_tls:  # the test's own CA is not in chromium's store
        opts.add_argument("--ignore-certificate-errors")
    driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    return driver


def full_page_screenshot(driver: webdriver.Chrome, path: Path, width: int = 1400, max_height: int = 4000) -> Path:
    """The whole page as PNG (the window grows to the page's height, up to max_height)."""
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.set_window_size(width, min(max(height, 600), max_height))
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))
    return path
