"""Superseded by `wlk bench` (whisperlivekit/bench/cli.py), which takes the same flags and more; this file
stays so that old commands keep working:

    python benchmarks/stream_bench.py --url ws://127.0.0.1:8000/asr --set en/hifitts_6097 --json OUT
"""

import sys

from whisperlivekit.bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
