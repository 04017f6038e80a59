"""Make the README's dashboard screenshots: a node with the phantom patient and a waiting case (the same setup
as the browser tests, tests/opscase.py), photographed by Debian's headless chromium.

    .venv/bin/python scripts/dashboard_screenshots.py     # writes docs/screenshots/*.png (about 2 minutes)
"""
from __future__ import annotations

import sys
import tempfile
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from browser import chromium, full_page_screenshot  # noqa: E402
from opscase import start_ops_case  # noqa: E402

OUT = ROOT / "docs" / "screenshots"


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="liver-node-shots-") as tmp:
        case = start_ops_case(Path(tmp))
        driver = chromium(Path(tmp) / "profile")
        try:
            pages = {
                "dashboard-cases.png": "/ui/",
                "dashboard-done-case.png": "/ui/case/" + urllib.parse.quote(case.case_id, safe=""),
                "dashboard-waiting-case.png": "/ui/case/" + urllib.parse.quote(case.waiting_patient, safe=""),
            }
            for name, path in pages.items():
                driver.set_window_size(1400, 1000)
                driver.get(case.http + path)
                full_page_screenshot(driver, OUT / name, max_height=5200)
                print(f"wrote {OUT / name}")
        finally:
            driver.quit()
            case.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
