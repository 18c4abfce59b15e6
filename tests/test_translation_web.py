"""The browser page with a real translating server: the target-language picker reaches the server and
each line shows its translation under it (Bergamot, English -> Portuguese, in Chromium)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import LiveServer

from whisperlivekit.web.tools import chromium_args, chromium_executable

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytestmark = pytest.mark.skipif(chromium_executable() is None, reason="Chromium is not installed")


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    from whisperlivekit import TranscriptionEngine
    from whisperlivekit.server.app import create_app

    engine = TranscriptionEngine(pcm_input=True, translation_backend="bergamot", store="none")
    with LiveServer(create_app(engine)) as live:
        yield live
    engine.close()


def test_page_shows_portuguese_under_each_line(server: LiveServer, jfk_wav: Path) -> None:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_executable(), args=chromium_args())
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(server.http + "/")
        page.click("#settings summary")
        page.select_option("#target-language", "pt")
        page.set_input_files("#upload", str(jfk_wav))
        done = "() => document.querySelector('#status').textContent === 'Done'"
        page.wait_for_function(done, timeout=120000)
        spoken = page.locator("#transcript .line:not(.silence)")
        translations = page.locator("#transcript .line:not(.silence) .translation")
        count = spoken.count()
        texts = [translations.nth(i).inner_text() for i in range(translations.count())]
        browser.close()
    assert not errors, errors
    assert count and len(texts) == count, texts  # every line carries its translation
    portuguese = " ".join(texts).lower()
    assert "país" in portuguese and "americanos" in portuguese, portuguese
