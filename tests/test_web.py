"""The browser page in a real headless Chromium, with recorded speech as its microphone.

Chromium plays ../shared/eval/classic/jfk.wav as the microphone (--use-file-for-fake-audio-capture);
the page records it through the AudioWorklet (PCM server) or MediaRecorder (WebM server) against a
real server on loopback, and the words must appear, drain on stop, and export.
Interface details that the model cannot produce on demand (several speakers, translations,
hostile text) are checked against a scripted /asr instead.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import JFK

from whisperlivekit.bench.metrics import normalize, wer
from whisperlivekit.web.tools import (
    DEMO_LINES,
    PageServer,
    chromium_args,
    chromium_executable,
    demo_messages,
    script_asr,
    take_extension_screenshot,
    take_screenshots,
)

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')"
)
pytestmark = pytest.mark.skipif(
    chromium_executable() is None,
    reason="Chromium is not installed: run scripts/install-test-deps.sh (or set WLK_CHROMIUM)",
)

CLIP_S = 11.0
SRT_TIME = r"(\d\d):(\d\d):(\d\d),(\d\d\d)"


@pytest.fixture(scope="module")
def playwright() -> Iterator:
    with sync_api.sync_playwright() as instance:
        yield instance


@pytest.fixture
def browser(playwright, jfk_wav: Path) -> Iterator:
    """A fresh Chromium per test: the fake microphone plays the clip once from its start."""
    instance = playwright.chromium.launch(executable_path=chromium_executable(), args=chromium_args(jfk_wav))
    yield instance
    instance.close()


@pytest.fixture
def page(browser) -> Iterator:
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, errors


@pytest.fixture(scope="module")
def page_server() -> Iterator[PageServer]:
    with PageServer() as server:
        yield server


def state(page) -> str:
    return page.get_attribute("#status", "data-state")


def wait_state(page, wanted: str, timeout_s: float = 60) -> None:
    page.wait_for_function(
        "wanted => document.querySelector('#status').dataset.state === wanted",
        arg=wanted,
        timeout=timeout_s * 1000,
    )


def committed_text(page) -> str:
    return " ".join(page.locator("#transcript .committed").all_inner_texts())


def download(page, selector: str) -> str:
    with page.expect_download() as info:
        page.click(selector)
    return Path(info.value.path()).read_text(encoding="utf-8")


def parse_srt(text: str) -> list[tuple[float, float, str]]:
    """Cues of a strictly valid SRT file: numbered from 1, well-formed and ordered times, text."""
    cues = []
    for number, block in enumerate(text.strip().split("\n\n"), 1):
        index, timing, *body = block.split("\n")
        assert index == str(number), block
        match = re.fullmatch(f"{SRT_TIME} --> {SRT_TIME}", timing)
        assert match, timing
        h1, m1, s1, ms1, h2, m2, s2, ms2 = map(int, match.groups())
        start = h1 * 3600 + m1 * 60 + s1 + ms1 / 1000
        end = h2 * 3600 + m2 * 60 + s2 + ms2 / 1000
        assert start <= end and body and all(line.strip() for line in body), block
        cues.append((start, end, " ".join(body)))
    starts = [cue[0] for cue in cues]
    assert starts == sorted(starts)
    return cues


def record_clip(page, url: str, *, stop_after_s: float = CLIP_S + 1.5) -> float:
    """Record the clip from the fake microphone; returns when words first showed up (s)."""
    page.goto(url)
    page.click("#record")
    started = time.monotonic()
    wait_state(page, "recording", 30)
    page.wait_for_function(
        "() => document.querySelector('#transcript').innerText.toLowerCase().includes('country')",
        timeout=30000,
    )
    first_words_s = time.monotonic() - started
    assert page.get_attribute("#record", "aria-pressed") == "true"
    time.sleep(max(0.0, stop_after_s - (time.monotonic() - started)))
    page.click("#record")  # stop
    wait_state(page, "idle", 60)
    return first_words_s


def check_live_transcript(page) -> None:
    # Words appeared while the clip was still playing: streaming, not a transcript at the end.
    text = committed_text(page)
    assert wer(JFK, text) <= 0.2, text
    assert page.locator("#transcript .buffer").count() == 0  # stop drained everything
    assert page.inner_text("#timer") != "00:00"
    cues = parse_srt(download(page, "[data-export=srt]"))
    assert wer(JFK, " ".join(cue[2] for cue in cues)) <= 0.2
    assert cues[0][0] < 2.0 and CLIP_S - 3 < cues[-1][1] < CLIP_S + 1.5, cues
    vtt = download(page, "[data-export=vtt]")
    assert vtt.startswith("WEBVTT\n\n") and "-->" in vtt
    lines = json.loads(download(page, "[data-export=json]"))["lines"]
    assert [line["speaker"] for line in lines if line["text"]] == [1] * len(
        [1 for line in lines if line["text"]]
    )


def test_live_microphone_pcm(page, pcm_server) -> None:
    first_words_s = record_clip(page, pcm_server.http + "/")
    assert first_words_s < CLIP_S, "no words on screen before the clip ended"
    check_live_transcript(page)


def test_live_microphone_webm(page, webm_server) -> None:
    first_words_s = record_clip(page, webm_server.http + "/")
    assert first_words_s < CLIP_S + 1, "no words on screen before the clip ended"
    check_live_transcript(page)


def upload_clip(page, url: str, wav: Path) -> None:
    page.goto(url)
    page.set_input_files("#upload", str(wav))
    page.wait_for_function("() => document.querySelector('#status').textContent === 'Done'", timeout=120000)
    text = committed_text(page)
    assert wer(JFK, text) <= 0.2, text
    assert page.locator("#transcript .buffer").count() == 0


def test_file_upload_pcm(page, pcm_server, jfk_wav) -> None:
    """The page decodes the file and sends 16 kHz PCM."""
    upload_clip(page, pcm_server.http + "/", jfk_wav)


def test_file_upload_webm(page, webm_server, jfk_wav) -> None:
    """A compressed-input server gets the file's own bytes."""
    upload_clip(page, webm_server.http + "/", jfk_wav)


def record_through_a_dropped_connection(page, url: str, cut_after_frames: int) -> list[str]:
    """Record the clip while the first connection is cut after ~3 s of audio (Playwright's
    WebSocket routing stands between page and server); returns the URLs of the connections."""
    connections = []

    def route(ws) -> None:
        server = ws.connect_to_server()
        connections.append(ws.url)
        if len(connections) > 1:
            return  # later connections pass through untouched
        frames = 0

        def from_page(data) -> None:
            nonlocal frames
            server.send(data)
            frames += 1
            if frames == cut_after_frames:
                ws.close(code=1012, reason="test: connection dropped")
                server.close()

        ws.on_message(from_page)

    page.route_web_socket("**/asr*", route)
    page.goto(url)
    page.click("#record")
    wait_state(page, "reconnecting", 30)
    assert "Reconnecting" in page.inner_text("#status")
    wait_state(page, "recording", 30)
    time.sleep(CLIP_S + 1.5 - 3)
    page.click("#record")
    wait_state(page, "idle", 60)
    return connections


def check_times_after_reconnection(page) -> None:
    lines = [line for line in json.loads(download(page, "[data-export=json]"))["lines"] if line["text"]]
    starts = [line["start"] for line in lines]
    assert starts == sorted(starts)
    # The second session's clock restarts at 0: the page shifts it to the recording's clock.
    assert CLIP_S - 3 < lines[-1]["end"] < CLIP_S + 1.5, lines


def test_reconnects_after_a_dropped_connection_pcm(page, pcm_server) -> None:
    connections = record_through_a_dropped_connection(page, pcm_server.http + "/", 30)  # 100 ms frames
    assert len(connections) == 2
    text = committed_text(page)
    assert wer(JFK, text) <= 0.25, text
    # No word lost: the new session re-hears the audio from the old one's last committed word (at or
    # before the cut at 3.0 s), not from the moment the connection came back.
    segments = page.evaluate("whisperLiveKit.model.segments.map(s => s.offset)")
    assert segments[-1] <= 3.0, segments
    check_times_after_reconnection(page)


def test_reconnects_after_a_dropped_connection_webm(page, webm_server) -> None:
    connections = record_through_a_dropped_connection(page, webm_server.http + "/", 12)  # 250 ms chunks
    assert len(connections) == 2
    # A WebM stream cannot be resumed: words not committed at the cut are lost, the rest is there.
    text = committed_text(page)
    assert wer("ask what you can do for your country", " ".join(normalize(text).split()[-8:])) <= 0.25, text
    check_times_after_reconnection(page)


def test_backoff_grows_while_the_server_is_down(page, page_server) -> None:
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    page.goto(page_server.url)
    page.click("#settings summary")
    page.fill("#server-url", f"127.0.0.1:{port}")
    page.evaluate(
        """() => { window.statuses = [];
        new MutationObserver(() => statuses.push(document.querySelector('#status').textContent))
          .observe(document.querySelector('#status'),
                   { childList: true, characterData: true, subtree: true }); }"""
    )
    page.click("#record")
    page.wait_for_function("() => statuses.some(s => s.includes('attempt 4'))", timeout=30000)
    delays = [
        float(m.group(1))
        for s in page.evaluate("statuses")
        if (m := re.search(r"in ([\d.]+) s \(attempt", s))
    ]
    assert len(delays) >= 4 and delays[3] > 2 * delays[0], delays  # exponential, with jitter
    assert page.get_attribute("#record", "aria-pressed") == "true"  # still recording meanwhile
    page.click("#record")
    wait_state(page, "idle", 10)


HOSTILE = '<img src=x onerror="window.__injected = true">'


def scripted_updates(lines: list[dict], **extra) -> list[dict]:
    update = {
        "type": "transcript",
        "status": "active_transcription",
        "lines": lines,
        "buffer_transcription": "",
        "buffer_diarization": "",
        "buffer_translation": "",
        "remaining_time_transcription": 0.0,
        "remaining_time_diarization": 0.0,
    }
    return [{"type": "config", "useAudioWorklet": True}, {**update, **extra}]


def test_rendering_speakers_silence_translation_buffer_and_no_html(page, page_server) -> None:
    messages = demo_messages()
    messages[1]["lines"][0] = {**messages[1]["lines"][0], "text": HOSTILE}
    messages[1]["buffer_transcription"] = "<b>not bold</b>"
    script_asr(page, messages)
    page.goto(page_server.url)
    page.click("#record")
    page.wait_for_selector("#transcript .buffer")
    transcript = page.locator("#transcript")
    # Text is text: the markup shows literally and nothing ran.
    assert HOSTILE in transcript.inner_text()
    assert transcript.locator("img, b").count() == 0
    assert page.evaluate("window.__injected") is None
    # Speakers: a label and a distinct colour each; silence as a marker; translations under lines.
    colours = [
        page.locator(f'.line[data-speaker="{n}"]').evaluate("e => getComputedStyle(e).borderLeftColor")
        for n in (1, 2, 3)
    ]
    assert len(set(colours)) == 3, colours
    assert page.locator(".speaker").all_inner_texts() == ["Speaker 1", "Speaker 2", "Speaker 3"]
    assert page.inner_text(".silence") == "silence · 3.4 s"
    assert (
        page.locator('.line[data-speaker="2"] .translation').inner_text().startswith("La page est terminée")
    )
    # The uncommitted buffer is grey and follows the last line.
    buffer = page.locator('.line[data-speaker="3"] .text .buffer')
    assert buffer.inner_text() == "<b>not bold</b>"
    grey, ink = (
        page.locator(selector).evaluate("e => getComputedStyle(e).color")
        for selector in ('.line[data-speaker="3"] .text .buffer', '.line[data-speaker="3"] .committed')
    )
    assert grey != ink
    assert page.inner_text("#lag-transcription") == "lag 0.6 s"
    assert page.inner_text("#lag-diarization") == "speakers 1.8 s"
    # Exports label speakers when there are several, and skip silence.
    txt = download(page, "[data-export=txt]")
    assert txt.splitlines()[:3] == [
        f"Speaker 1: {HOSTILE}",
        DEMO_LINES[0]["translation"],
        "Speaker 2: " + DEMO_LINES[1]["text"],
    ]
    cues = parse_srt(download(page, "[data-export=srt]"))
    assert len(cues) == 3 and cues[2][0] == 12.3
    # (Permissions are replaced, not added: without "microphone" the capture would end.)
    page.context.grant_permissions(["clipboard-read", "clipboard-write", "microphone"])
    page.click("#copy")
    assert page.evaluate("navigator.clipboard.readText()") == txt
    page.click("#record")
    wait_state(page, "idle", 10)


def test_settings_theme_languages_keyboard_and_phone_width(page, page_server) -> None:
    urls: list[str] = []

    def route(ws) -> None:
        urls.append(ws.url)
        ws.send(json.dumps({"type": "config", "useAudioWorklet": True}))
        ws.on_message(lambda data: data == b"" and ws.send(json.dumps({"type": "ready_to_stop"})))

    page.route_web_socket(re.compile(".*"), route)
    page.goto(page_server.url)
    page.click("#settings summary")
    page.select_option("#theme", "dark")
    assert page.get_attribute("html", "data-theme") == "dark"
    dark_bg = page.evaluate("getComputedStyle(document.body).backgroundColor")
    page.fill("#server-url", "localhost:9/custom/asr")
    page.press("#server-url", "Tab")
    page.select_option("#language", "de")
    page.select_option("#target-language", "fr")
    page.wait_for_function("() => document.querySelector('#source').options.length > 0")
    microphones = page.locator("#source option").all_inner_texts()
    assert any("Default" in name for name in microphones), microphones

    page.reload()
    assert page.get_attribute("html", "data-theme") == "dark"
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == dark_bg
    page.click("#settings summary")
    page.select_option("#theme", "light")
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") != dark_bg
    page.select_option("#theme", "system")  # follows the operating system's preference
    page.emulate_media(color_scheme="dark")
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == dark_bg
    page.emulate_media(color_scheme="light")
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") != dark_bg
    assert page.input_value("#server-url") == "localhost:9/custom/asr"
    assert page.input_value("#language") == "de" and page.input_value("#target-language") == "fr"

    # Keyboard only: Tab to the record button, Enter starts, Space stops.
    page.focus("body")
    for _ in range(20):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "record":
            break
    assert page.evaluate("document.activeElement.id") == "record"
    page.keyboard.press("Enter")
    wait_state(page, "recording", 15)
    assert urls[-1] == "ws://localhost:9/custom/asr?language=de&target_language=fr"
    # A microphone picked once is remembered (labels are known now that access was granted).
    labels = page.locator("#source option").all_inner_texts()
    values = [page.locator("#source option").nth(i).get_attribute("value") for i in range(len(labels))]
    chosen = values[-1]
    page.select_option("#source", chosen)
    page.focus("#record")
    page.keyboard.press("Space")
    wait_state(page, "idle", 15)

    # Phone width: nothing overflows sideways and the controls stay reachable.
    page.set_viewport_size({"width": 360, "height": 740})
    page.reload()
    assert page.input_value("#source") == chosen
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    box = page.locator("#record").bounding_box()
    assert box and box["x"] >= 0 and box["x"] + box["width"] <= 360


def test_browser_modules(page, page_server) -> None:
    """The shared modules' logic, run in the browser that uses them."""
    page.goto(page_server.url)
    result = page.evaluate(
        """async () => {
        const { Resampler } = await import('./web/resampler.js');
        const { asrUrl, backoffDelay } = await import('./web/asr-client.js');
        const { formatTranscript } = await import('./web/transcript.js');
        const tone = (f, rate) =>
          Float32Array.from({ length: rate }, (_, i) => 0.5 * Math.sin(2 * Math.PI * f * i / rate));
        const level = (f, rate) => {
          const r = new Resampler(rate, 16000);
          const x = tone(f, rate);
          const parts = [];
          for (let i = 0; i < x.length; i += 128) parts.push(...r.process(x.subarray(i, i + 128)));
          parts.push(...r.flush());
          const body = parts.slice(400, -400);
          const rms = Math.sqrt(body.reduce((s, v) => s + v * v, 0) / body.length);
          return { length: parts.length, gain: rms / (0.5 / Math.SQRT2) };
        };
        const peak = (rate) => {  // an impulse at 0.1 s must come out at 0.1 s: timestamps stay true
          const x = new Float32Array(rate);
          x[Math.round(rate / 10)] = 1;
          const r = new Resampler(rate, 16000);
          const y = [...r.process(x), ...r.flush()];
          return y.indexOf(Math.max(...y));
        };
        return {
          peaks: [peak(48000), peak(44100)],
          speech48: level(1000, 48000), speech44: level(1000, 44100), alias48: level(12000, 48000),
          alias44: level(9500, 44100), up8: level(1000, 8000),
          urls: [asrUrl('', {}, 'https://example.org/wlk/'), asrUrl('http://h:8000', { language: 'fr' }),
                 asrUrl('h:8000/asr', { targetLanguage: 'de' })],
          delays: [0, 1, 2, 3, 10].map(a => backoffDelay(a, { jitter: 0 })),
          srt: formatTranscript(
            [{ speaker: 1, text: 'hi', start: 3661.5, end: 3662, translation: '' }], 'srt'),
        };
    }"""
    )
    for key in ("speech48", "speech44", "up8"):
        assert result[key]["length"] == 16000 and abs(result[key]["gain"] - 1) < 0.01, result[key]
    # Above the new Nyquist frequency (8 kHz) nothing folds back: averaging would let it through.
    assert result["alias48"]["gain"] < 1e-3 and result["alias44"]["gain"] < 1e-3
    assert result["peaks"] == [1600, 1600]
    assert result["urls"] == [
        "wss://example.org/wlk/asr",
        "ws://h:8000/asr?language=fr",
        "ws://h:8000/asr?target_language=de",
    ]
    assert result["delays"] == [500, 1000, 2000, 4000, 10000]
    assert result["srt"] == "1\n01:01:01,500 --> 01:01:02,000\nhi\n"


def test_screenshots(playwright, tmp_path, jfk_wav) -> None:
    """scripts/screenshots.py's work: light and dark, desktop and phone width, and the side panel."""
    shots = [
        *take_screenshots(tmp_path, jfk_wav, playwright),
        take_extension_screenshot(tmp_path, jfk_wav, playwright),
    ]
    assert sorted(p.name for p in shots) == sorted(
        [f"web-{theme}-{size}.png" for theme in ("light", "dark") for size in ("desktop", "phone")]
        + ["extension-side-panel.png"]
    )
    for shot in shots:
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


def test_a_refused_session_is_reported(page, pcm_server) -> None:
    """tiny.en cannot transcribe German: the server's error shows instead of a silent failure."""
    page.goto(pcm_server.http + "/")
    page.click("#settings summary")
    page.select_option("#language", "de")
    page.click("#record")
    wait_state(page, "error", 30)
    assert page.get_attribute("#record", "aria-pressed") == "false"
    assert "de" in page.inner_text("#message")


def test_recording_stops_cleanly_when_the_microphone_goes_away(page, page_server) -> None:
    script_asr(page, demo_messages)
    page.goto(page_server.url)
    page.click("#record")
    page.wait_for_selector("#transcript .buffer")
    page.context.clear_permissions()  # as if the user withdrew microphone access
    page.context.grant_permissions([])
    wait_state(page, "idle", 15)
    assert "audio source ended" in page.inner_text("#message")
    assert "Welcome back" in committed_text(page)  # the transcript stays


def test_long_transcripts_follow_the_newest_words(page, page_server) -> None:
    lines = [
        {"speaker": 1, "text": f"Sentence number {i}.", "start": i, "end": i + 0.9, "translation": ""}
        for i in range(60)
    ]
    script_asr(page, scripted_updates(lines, buffer_transcription="and the next"))
    page.set_viewport_size({"width": 800, "height": 500})
    page.goto(page_server.url)
    page.click("#record")
    page.wait_for_selector("#transcript .buffer")
    box = page.locator("#transcript .buffer").bounding_box()
    assert box and 0 <= box["y"] <= 500, box  # the grey buffer is on screen
    page.click("#record")
    wait_state(page, "idle", 10)
