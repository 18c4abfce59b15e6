"""The Chrome extension (extension/), built and loaded into headless Chromium.

The side panel is the page's interface with the current tab as its first source. Chrome lets an
extension capture a tab only after the user clicked its button on that tab; a click simulated
through DevTools (Extensions.triggerAction) opens the panel but does not grant that, so tab capture
itself is checked up to that gate (the panel says what to do). The rest of the panel (its shared
modules, server setting, live transcript) runs for real, with the fake microphone as its source.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import JFK

from whisperlivekit.bench.metrics import wer
from whisperlivekit.web.tools import (
    EXTENSION_SRC,
    PageServer,
    build_extension,
    chromium_args,
    chromium_executable,
    web_dir,
)

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')"
)
pytestmark = pytest.mark.skipif(
    chromium_executable() is None,
    reason="Chromium is not installed: run scripts/install-browser-deps.sh (or set WLK_CHROMIUM)",
)



def test_build_shares_the_page_modules(tmp_path) -> None:
    out = build_extension(tmp_path / "ext")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["manifest_version"] == 3
    assert {"tabCapture", "sidePanel"} <= set(manifest["permissions"])
    # Every module the side panel imports exists, and is the page's file byte for byte.
    for module in web_dir().glob("*.js"):
        assert (out / "web" / module.name).read_bytes() == module.read_bytes()
    assert not list((EXTENSION_SRC).glob("web")), "extension/ must not keep its own copy of the modules"
    panel = (out / "sidepanel.html").read_text()
    assert 'src="sidepanel.js"' in panel and 'href="web/style.css"' in panel
    for name in ("background.js", "sidepanel.js", "tab-capture.js"):
        assert (out / name).is_file()


@pytest.fixture
def extension_context(tmp_path, jfk_wav: Path) -> Iterator:
    out = build_extension(tmp_path / "ext")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=chromium_executable(),
            headless=True,
            args=[*chromium_args(jfk_wav), f"--disable-extensions-except={out}", f"--load-extension={out}"],
        )
        yield context
        context.close()


def extension_id(context) -> str:
    workers = context.service_workers or [context.wait_for_event("serviceworker", timeout=15000)]
    return workers[0].url.split("/")[2]


def test_toolbar_button_opens_the_side_panel(extension_context) -> None:
    """background.js makes the toolbar button open the panel (clicked through DevTools' Extensions domain)."""
    ext = extension_id(extension_context)
    with PageServer() as server:
        tab = extension_context.pages[0] if extension_context.pages else extension_context.new_page()
        tab.goto(server.url)
        cdp = extension_context.browser.new_browser_cdp_session()
        tabs = cdp.send("Target.getTargets", {"filter": [{"type": "tab"}]})["targetInfos"]
        target = next(t["targetId"] for t in tabs if t["url"] == server.url)
        panel_url = f"chrome-extension://{ext}/sidepanel.html"

        def panel_open() -> bool:
            pages = cdp.send("Target.getTargets")["targetInfos"]
            return any(t["type"] == "page" and t["url"] == panel_url for t in pages)

        assert not panel_open()
        cdp.send("Extensions.triggerAction", {"id": ext, "targetId": target})
        deadline = time.monotonic() + 10
        while not panel_open() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert panel_open()


def test_side_panel_transcribes_live(extension_context, pcm_server) -> None:
    panel = extension_context.new_page()
    errors: list[str] = []
    panel.on("pageerror", lambda error: errors.append(str(error)))
    panel.goto(f"chrome-extension://{extension_id(extension_context)}/sidepanel.html")
    # The tab is the default source; the server is a setting (no page origin to fall back on).
    assert panel.locator("label[for=source]").text_content() == "Source"
    panel.wait_for_function("() => document.querySelector('#source').options.length > 1")  # tab + microphones
    assert panel.input_value("#source") == "tab"
    assert panel.get_attribute("#server-url", "placeholder") == "ws://localhost:8000/asr"

    # Tab capture: without a click on the extension's button Chrome refuses, and the panel says so.
    panel.click("#record")
    panel.wait_for_function(
        "() => document.querySelector('#status').dataset.state === 'error'", timeout=15000
    )
    assert "Click the WhisperLiveKit button" in panel.inner_text("#message")

    # The same panel, talking to a real server, with the fake microphone as its source.
    panel.click("#settings summary")
    panel.fill("#server-url", pcm_server.ws)
    microphone = panel.locator("#source option").nth(1).get_attribute("value")
    panel.select_option("#source", microphone)
    panel.click("#record")
    started = time.monotonic()
    panel.wait_for_function(
        "() => document.querySelector('#transcript').innerText.toLowerCase().includes('country')",
        timeout=30000,
    )
    time.sleep(max(0.0, 12.5 - (time.monotonic() - started)))
    panel.click("#record")
    panel.wait_for_function("() => document.querySelector('#status').dataset.state === 'idle'", timeout=60000)
    text = " ".join(panel.locator("#transcript .committed").all_inner_texts())
    assert wer(JFK, text) <= 0.2, text
    assert not errors, errors


def test_tab_capture_logic(extension_context) -> None:
    """tab-capture.js against stand-ins for the chrome.* APIs: the constraints Chrome expects for a
    tab stream, the tab it picks, and the advice when Chrome refuses."""
    panel = extension_context.new_page()
    panel.goto(f"chrome-extension://{extension_id(extension_context)}/sidepanel.html")
    result = panel.evaluate(
        """async () => {
        const { activeTab, captureTab } = await import('./tab-capture.js');
        const seen = {};
        const tabs = { query: async (q) => { seen.query = q; return [{ id: 7 }]; } };
        const capture = { getMediaStreamId: async ({ targetTabId }) => `stream-${targetTabId}` };
        const media = { getUserMedia: async (constraints) => constraints };
        const tab = await activeTab(tabs);
        const constraints = await captureTab(tab.id, capture, media);
        const refused = { getMediaStreamId: async () => { throw new Error('not invoked'); } };
        const error = await captureTab(7, refused, media).catch((e) => e.message);
        const none = await activeTab({ query: async () => [] }).catch((e) => e.message);
        return { seen, constraints, error, none };
    }"""
    )
    assert result["seen"]["query"] == {"active": True, "lastFocusedWindow": True}
    assert result["constraints"] == {
        "audio": {"mandatory": {"chromeMediaSource": "tab", "chromeMediaSourceId": "stream-7"}},
        "video": False,
    }
    assert "not invoked" in result["error"] and "Click the WhisperLiveKit button" in result["error"]
    assert "no tab to capture" in result["none"]
