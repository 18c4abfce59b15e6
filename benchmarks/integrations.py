"""Figures for the integrations (issue 10), on the long-form Hi-Fi TTS stream (../shared/eval/EVAL.md):

1. `/asr?mode=diff` against full mode: bytes the client receives for the same stream.
2. `POST /v1/audio/transcriptions` on the whole stream as one file: wall time (RTF), WER.
3. A live jfk stream (real time) while that file is being transcribed, against the same stream
   alone: the server's lag (`remaining_time_transcription`) and drain time, i.e. whether file
   requests starve live sessions.

    nice -n 19 .venv/bin/python benchmarks/integrations.py --out benchmarks/results/integrations.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import wave
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def lag_stats(result) -> dict:
    lags = [m.data["remaining_time_transcription"] for m in result.updates]
    return {
        "lag_median_s": round(statistics.median(lags), 2),
        "lag_max_s": round(max(lags), 2),
        "drain_s": None if result.drain_s is None else round(result.drain_s, 2),
    }


async def upload(client, path: Path) -> tuple[float, str]:
    start = time.monotonic()
    with open(path, "rb") as audio:
        result = await client.audio.transcriptions.create(model="whisper-1", file=audio)
    return time.monotonic() - start, result.text


async def main(args: argparse.Namespace) -> dict:
    import openai
    from conftest import LiveServer

    from whisperlivekit import TranscriptionEngine
    from whisperlivekit.bench.dataset import load_set
    from whisperlivekit.bench.metrics import wer
    from whisperlivekit.client import decode_audio, stream_audio, to_pcm16
    from whisperlivekit.server.app import create_app

    stream = load_set("en/hifitts_6097")
    jfk = decode_audio(REPO.parent / "shared" / "eval" / "classic" / "jfk.wav")
    engine = TranscriptionEngine(pcm_input=True)
    figures: dict = {"stream": stream.name, "stream_s": round(stream.duration_s, 1), "model": "tiny.en"}
    with LiveServer(create_app(engine)) as server, tempfile.TemporaryDirectory() as tmp:
        for mode in ("full", "diff"):
            result = await stream_audio(f"{server.ws}?mode={mode}", stream.samples, speed=args.speed)
            assert result.error is None, result.error
            figures[f"{mode}_mode"] = {
                "speed": args.speed,
                "updates": len(result.updates),
                "bytes": result.received_bytes,
                "bytes_per_update": round(result.received_bytes / len(result.updates)),
                "wer": round(wer(stream.reference, result.final_text), 4),
            }
        path = Path(tmp) / "stream.wav"
        with wave.open(str(path), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(16000)
            out.writeframes(to_pcm16(stream.samples))
        client = openai.AsyncOpenAI(base_url=f"{server.http}/v1", api_key="x", max_retries=0, timeout=900)
        seconds, text = await upload(client, path)
        figures["file_alone"] = {
            "wall_s": round(seconds, 2),
            "rtf": round(seconds / stream.duration_s, 4),
            "wer": round(wer(stream.reference, text), 4),
        }
        alone = await stream_audio(server.ws, jfk, speed=1.0)
        figures["jfk_live_alone"] = lag_stats(alone)
        uploading = asyncio.create_task(upload(client, path))
        await asyncio.sleep(0.5)
        during = await stream_audio(server.ws, jfk, speed=1.0)
        seconds, _ = await uploading
        figures["jfk_live_during_upload"] = lag_stats(during)
        figures["file_during_live"] = {
            "wall_s": round(seconds, 2),
            "rtf": round(seconds / stream.duration_s, 4),
        }
    engine.close()
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--speed", type=float, default=4.0, help="Replay speed of the diff/full streams.")
    parser.add_argument("--out", type=Path, help="Write the figures here as JSON.")
    arguments = parser.parse_args()
    results = asyncio.run(main(arguments))
    text = json.dumps(results, indent=2)
    print(text)
    if arguments.out:
        arguments.out.write_text(text + "\n")
