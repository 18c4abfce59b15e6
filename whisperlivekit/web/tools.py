"""Helpers around the browser page: build the Chrome extension, find and drive Chromium.

Used by scripts/ (build_extension.py, screenshots.py) and the browser tests. Playwright is imported
only inside the functions that need it.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable
from importlib import resources
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
EXTENSION_SRC = REPO / "extension"
PAGE_SCRIPT = '<script type="module" src="web/main.js"></script>'
SIDEPANEL_SCRIPT = '<script type="module" src="sidepanel.js"></script>'
# The page's own files, as the extension needs them (not the Python modules of this package).
WEB_SUFFIXES = (".js", ".css", ".html")


def web_dir() -> Path:
    return Path(str(resources.files("whisperlivekit.web")))


def build_extension(out: Path, source: Path = EXTENSION_SRC) -> Path:
    """A loadable unpacked extension in `out`: extension/ plus the page's modules under web/.

    The side panel's HTML is the page's index.html with its entry script swapped, so the page and
    the extension share markup, styles and every module: nothing is copied by hand.
    """
    out = Path(out)
    if out.exists():
        if any(out.iterdir()) and not (out / "manifest.json").exists():
            raise FileExistsError(f"{out} is not empty and is not an earlier build: choose another folder")
        shutil.rmtree(out)
    shutil.copytree(source, out, ignore=shutil.ignore_patterns("build", ".gitignore", "*.md"))
    (out / "web").mkdir()
    for file in sorted(web_dir().iterdir()):
        if file.suffix in WEB_SUFFIXES and file.name != "index.html":
            shutil.copy2(file, out / "web" / file.name)
    page = (web_dir() / "index.html").read_text(encoding="utf-8")
    if PAGE_SCRIPT not in page:
        raise RuntimeError("index.html no longer loads web/main.js: update build_extension")
    (out / "sidepanel.html").write_text(page.replace(PAGE_SCRIPT, SIDEPANEL_SCRIPT), encoding="utf-8")
    manifest = json.loads((out / "manifest.json").read_text())
    for key in ("background", "side_panel"):
        if not manifest.get(key):
            raise RuntimeError(f"manifest.json lacks {key}")
    return out


def chromium_executable() -> str | None:
    """Chromium to drive: $WLK_CHROMIUM, else Debian's `chromium` (Playwright's download is not used)."""
    candidates = [os.environ.get("WLK_CHROMIUM", "")]
    candidates += [shutil.which(name) or "" for name in ("chromium", "chromium-browser", "google-chrome")]
    return next((path for path in candidates if path and os.access(path, os.X_OK)), None)


def require_chromium() -> str:
    if (executable := chromium_executable()) is None:
        raise RuntimeError("Chromium is not installed: run scripts/install-test-deps.sh")
    return executable


def chromium_args(fake_audio: Path | None = None, *, loop: bool = False) -> list[str]:
    """Flags for headless Chromium as root in a container, with a WAV file as the microphone."""
    args = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--autoplay-policy=no-user-gesture-required",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
    ]
    if fake_audio is not None:
        args.append(f"--use-file-for-fake-audio-capture={fake_audio}{'' if loop else '%noloop'}")
    return args


class PageServer:
    """The page's static files over HTTP on loopback, for pages that need no model (screenshots,
    interface tests with a scripted /asr). A real server: Chromium does not let Playwright's request
    routing answer AudioWorklet module fetches.
    """

    def __init__(self) -> None:
        import http.server
        import threading

        root = web_dir()

        class Handler(http.server.SimpleHTTPRequestHandler):
            def translate_path(self, path: str) -> str:
                path = path.split("?")[0]
                name = "index.html" if path == "/" else path.removeprefix("/web/")
                flat = "/" not in name and name not in ("", ".", "..")  # the folder's own files only
                return str(root / name) if flat else str(root / "missing")

            def log_message(self, *args: object) -> None:
                pass

        Handler.extensions_map = {**Handler.extensions_map, ".js": "text/javascript"}
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/"

    def __enter__(self) -> PageServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def script_asr(
    page: Any, messages: Iterable[dict] | Callable[[], Iterable[dict]], *, url: str = "**/asr*"
) -> None:
    """A scripted /asr server: answers each connection with `messages`, then ready_to_stop on stop."""

    def handler(ws: Any) -> None:
        for message in messages() if callable(messages) else messages:
            ws.send(json.dumps(message))

        def on_message(data: str | bytes) -> None:
            if isinstance(data, (bytes, bytearray)) and len(data) == 0:
                ws.send(json.dumps({"type": "ready_to_stop"}))
                ws.close(code=1000)

        ws.on_message(on_message)

    page.route_web_socket(url, handler)


DEMO_LINES = [
    {
        "speaker": 1,
        "text": "Welcome back, everyone. Let's look at the release plan for this week.",
        "start": 0.4,
        "end": 4.1,
        "translation": "Bon retour à tous. Regardons le plan de sortie de cette semaine.",
        "detected_language": None,
    },
    {
        "speaker": 2,
        "text": "The browser page is done, and the tests run it in headless Chromium.",
        "start": 4.6,
        "end": 8.9,
        "translation": "La page est terminée, et les tests l'exécutent dans Chromium.",
        "detected_language": None,
    },
    {"speaker": -2, "text": "", "start": 8.9, "end": 12.3, "translation": "", "detected_language": None},
    {
        "speaker": 3,
        "text": "Great. What about the extension for tab audio?",
        "start": 12.3,
        "end": 14.8,
        "translation": "Super. Et l'extension pour l'audio des onglets ?",
        "detected_language": None,
    },
]


def demo_messages() -> list[dict]:
    """A transcript that shows every part of the interface (for screenshots)."""
    return [
        {"type": "config", "useAudioWorklet": True},
        {
            "type": "transcript",
            "status": "active_transcription",
            "lines": [dict(line) for line in DEMO_LINES],
            "buffer_transcription": "It captures the tab and keeps it",
            "buffer_diarization": "",
            "buffer_translation": "Elle capture l'onglet et le garde",
            "remaining_time_transcription": 0.6,
            "remaining_time_diarization": 1.8,
        },
    ]


def take_screenshots(out_dir: Path, fake_audio: Path | None = None, playwright: Any = None) -> list[Path]:
    """Light and dark, desktop and phone width, of the page during a (scripted) live session."""
    if playwright is None:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as instance:
            return take_screenshots(out_dir, fake_audio, instance)
    executable = require_chromium()
    out_dir.mkdir(parents=True, exist_ok=True)
    shots = []
    sizes = {"desktop": ({"width": 1100, "height": 760}, 1), "phone": ({"width": 390, "height": 844}, 2)}
    with PageServer() as server:
        browser = playwright.chromium.launch(
            executable_path=executable, args=chromium_args(fake_audio, loop=True)
        )
        for theme in ("light", "dark"):
            for name, (viewport, scale) in sizes.items():
                context = browser.new_context(
                    viewport=viewport, device_scale_factor=scale, color_scheme=theme
                )
                page = context.new_page()
                script_asr(page, demo_messages)
                page.goto(server.url)
                page.click("#record")
                page.wait_for_selector(".line .buffer")
                page.wait_for_timeout(1500)  # a few seconds of waveform and timer
                page.evaluate("window.scrollTo(0, 0)")  # the page follows the newest words: show the top
                path = out_dir / f"web-{theme}-{name}.png"
                page.screenshot(path=str(path))
                shots.append(path)
                context.close()
        browser.close()
    return shots


def take_extension_screenshot(out_dir: Path, fake_audio: Path | None = None, playwright: Any = None) -> Path:
    """The extension's side panel (built, loaded, at a side panel's width) with the demo transcript."""
    if playwright is None:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as instance:
            return take_extension_screenshot(out_dir, fake_audio, instance)
    import tempfile

    executable = require_chromium()
    with tempfile.TemporaryDirectory() as scratch:
        extension = build_extension(Path(scratch) / "extension")
        context = playwright.chromium.launch_persistent_context(
            str(Path(scratch) / "profile"),
            executable_path=executable,
            headless=True,
            viewport={"width": 400, "height": 760},
            args=[
                *chromium_args(fake_audio, loop=True),
                f"--disable-extensions-except={extension}",
                f"--load-extension={extension}",
            ],
        )
        workers = context.service_workers or [context.wait_for_event("serviceworker")]
        page = context.new_page()
        script_asr(page, demo_messages)
        page.goto(f"chrome-extension://{workers[0].url.split('/')[2]}/sidepanel.html")
        # "This tab" needs a real click on the toolbar button; the fake microphone stands in for it.
        page.click("#settings summary")
        page.select_option("#source", index=1)
        page.click("#settings summary")
        page.click("#record")
        page.wait_for_selector(".line .buffer")
        page.wait_for_timeout(1000)
        page.evaluate("window.scrollTo(0, 0)")
        path = out_dir / "extension-side-panel.png"
        page.screenshot(path=str(path))
        context.close()
    return path
