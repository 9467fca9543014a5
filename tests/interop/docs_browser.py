"""The API reference at /docs in a real browser (Debian's Chromium via Playwright): it renders
every operation of /openapi.json under the server's CSP, with nothing fetched from elsewhere, and
the filter narrows it. Prints the operation count; a screenshot goes to <shots>/docs.png.

usage: docs_browser.py <rest-base-url> <shots-dir>
"""

import sys
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"


def wait_for(check, what, seconds=15):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def main() -> None:
    base, shots = sys.argv[1], Path(sys.argv[2])
    shots.mkdir(parents=True, exist_ok=True)
    foreign = []
    errors = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.on("request", lambda r: foreign.append(r.url) if not r.url.startswith(base) else None)
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        response = page.goto(f"{base}/docs")
        assert response.status == 200, response.status
        assert "default-src 'self'" in response.headers["content-security-policy"]
        operations = page.locator("details.op")
        wait_for(lambda: operations.count() > 50, "the operations to render")
        total = operations.count()
        page.fill("#filter", "heartbeat")
        visible = page.locator("details.op:not([hidden])")
        wait_for(lambda: 0 < visible.count() < total, "the filter")
        for index in range(visible.count()):
            assert "heartbeat" in visible.nth(index).get_attribute("data-search")
        page.fill("#filter", "")
        page.locator("details.op", has_text="/registry/register").first.locator("summary").click()
        page.screenshot(path=str(shots / "docs.png"), full_page=False)
        browser.close()
    assert not foreign, f"fetched from elsewhere: {foreign}"
    assert not errors, f"errors in the page: {errors}"
    print(total)


if __name__ == "__main__":
    main()
