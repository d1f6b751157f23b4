"""Renew the dashboard screenshots in docs/ from the known story (`make screenshots`).

The same story, server and browser as tests/test_office_dashboard.py, so the
pictures in the README show the figures the tests check.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

from tests.dbutil import sqlite_file_url
from tests.office_browser import chromium_path, launch
from tests.office_support import load_story, office_server

DOCS = Path(__file__).resolve().parent.parent / "docs"
SHOTS = (  # file, path, language
    ("office-overview.png", "/", "de"),
    ("office-clusters.png", "/clusters?state=in_breach&state=admitted", "de"),
    ("office-cluster.png", "/clusters/wasserstoff-nord", "de"),
    ("office-deadlines-en.png", "/deadlines", "en"),
)


def main() -> int:
    executable = chromium_path()
    if executable is None:
        print("chromium is missing: run scripts/ensure-test-machine.sh", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as folder:
        url = sqlite_file_url(Path(folder))
        load_story(url)
        with office_server(url) as base, sync_playwright() as playwright:
            browser = launch(playwright, executable)
            for name, path, lang in SHOTS:
                context = browser.new_context(viewport={"width": 1280, "height": 900})
                page = context.new_page()
                separator = "&" if "?" in path else "?"
                page.goto(f"{base}{path}{separator}lang={lang}")
                page.screenshot(path=DOCS / name, full_page=True)
                context.close()
                print(f"docs/{name}")
            browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
