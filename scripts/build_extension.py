"""Build the Chrome extension into extension/build/ (or the folder given), ready for "Load unpacked".

.venv/bin/python scripts/build_extension.py [OUT]
"""

from __future__ import annotations

import sys
from pathlib import Path

from whisperlivekit.web.tools import EXTENSION_SRC, build_extension

if __name__ == "__main__":
    out = build_extension(Path(sys.argv[1]) if len(sys.argv) > 1 else EXTENSION_SRC / "build")
    print(f"extension built in {out}: chrome://extensions > Developer mode > Load unpacked")
