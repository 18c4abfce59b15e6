"""Screenshots of the page (light and dark, desktop and phone width) and the extension's side panel
into docs/.

    .venv/bin/python scripts/screenshots.py [OUT_DIR]

The page is served from the package's files and /asr is scripted (tools.demo_messages), so no
model is needed; the waveform comes from ../shared/eval/classic/jfk.wav as a fake microphone.
"""

from __future__ import annotations

import sys
from pathlib import Path

from whisperlivekit.web.tools import REPO, take_extension_screenshot, take_screenshots

if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs"
    wav = REPO.parent / "shared" / "eval" / "classic" / "jfk.wav"
    audio = wav if wav.exists() else None
    for path in take_screenshots(out, audio):
        print(path)
    print(take_extension_screenshot(out, audio))
