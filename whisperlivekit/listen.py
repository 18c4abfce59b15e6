"""`wlk listen`: live transcription of the microphone (or a file played as if live) in the terminal.

Audio comes from `sounddevice` (the optional `listen` extra) as 16 kHz mono s16le in 100 ms blocks,
and goes either to an in-process engine or to a running server's `/asr` (in `mode=diff`). Finished
lines are printed once; on a terminal the line being spoken and the model's tentative words are
redrawn in place below them.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from whisperlivekit.client import decode_audio, stream_updates, to_pcm16

if TYPE_CHECKING:
    from whisperlivekit.engine import TranscriptionEngine

SAMPLE_RATE = 16000
CHUNK_SECONDS = 0.1
SILENCE_SPEAKER = -2
INSTALL_HINT = "wlk listen needs the microphone library: pip install 'whisperlivekit[listen]' (and PortAudio)"


def check_microphone() -> None:
    """Fail early, before any model loads, when sounddevice or PortAudio is missing."""
    try:
        import sounddevice  # noqa: F401
    except (ImportError, OSError) as error:  # OSError: the module is there but PortAudio is not
        raise SystemExit(f"{INSTALL_HINT}\n({error})") from None


async def microphone_chunks(stop: asyncio.Event, device: str | None = None) -> AsyncIterator[bytes]:
    import sounddevice as sd

    loop = asyncio.get_running_loop()
    blocks: asyncio.Queue[bytes] = asyncio.Queue()

    def captured(data, frames, when, status) -> None:  # PortAudio's thread
        loop.call_soon_threadsafe(blocks.put_nowait, bytes(data))

    blocksize = int(SAMPLE_RATE * CHUNK_SECONDS)
    selected: int | str | None = int(device) if device and device.isdigit() else device  # index or name
    with sd.RawInputStream(
        samplerate=SAMPLE_RATE,
        channels=1,
        dtype="int16",
        blocksize=blocksize,
        device=selected,
        callback=captured,
    ):
        while not stop.is_set():
            getting = asyncio.ensure_future(blocks.get())
            stopping = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait({getting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if getting not in done:
                getting.cancel()
                break
            yield getting.result()


async def file_chunks(path: Path, stop: asyncio.Event, speed: float = 1.0) -> AsyncIterator[bytes]:
    """A file played as a live source: 100 ms blocks at `speed` x real time."""
    pcm = to_pcm16(await asyncio.to_thread(decode_audio, path))
    size = int(SAMPLE_RATE * CHUNK_SECONDS) * 2
    start = time.monotonic()
    for k, offset in enumerate(range(0, len(pcm), size)):
        if stop.is_set():
            break
        await asyncio.sleep(max(0.0, start + k * CHUNK_SECONDS / speed - time.monotonic()))
        yield pcm[offset : offset + size]


async def local_updates(engine: TranscriptionEngine, chunks: AsyncIterator[bytes]) -> AsyncIterator[dict]:
    from whisperlivekit.session import AudioProcessor

    processor = AudioProcessor(engine, pcm_input=True)
    updates = await processor.create_tasks()

    async def feed() -> None:
        async for chunk in chunks:
            await processor.process_audio(chunk)
        await processor.process_audio(b"")

    feeder = asyncio.create_task(feed())
    try:
        async for update in updates:
            yield update
    finally:
        feeder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feeder
        await processor.cleanup()


class TerminalView:
    """Prints each finished line once; on a terminal, redraws the line in progress below them."""

    def __init__(self, out: TextIO, live: bool) -> None:
        self.out, self.live = out, live
        self.printed = 0  # finished spoken lines already printed
        self.spoken: list[str] = []

    def show(self, update: dict) -> None:
        if update.get("type") in ("error", "warning"):
            self._clear()
            print(f"[{update['type']}] {update.get(update['type'])}", file=sys.stderr)
            return
        if update.get("type") != "transcript":  # ready_to_stop
            return
        lines = update.get("lines", [])
        # The last line may still grow; every line before it is final (docs/protocol.md).
        finished = [line for line in lines[:-1] if line["speaker"] != SILENCE_SPEAKER and line["text"]]
        self._clear()
        for line in finished[self.printed :]:
            self.out.write(line["text"] + "\n")
        self.printed = max(self.printed, len(finished))
        current = lines[-1]["text"] if lines and lines[-1]["speaker"] != SILENCE_SPEAKER else ""
        self.spoken = [line["text"] for line in finished] + ([current] if current else [])
        if self.live:
            tentative = update.get("buffer_transcription", "")
            status = f"{current} \x1b[2m{tentative}\x1b[0m" if tentative else current
            width = shutil.get_terminal_size().columns
            self.out.write(status[-(width + 8) :])
        self.out.flush()

    def finish(self) -> None:
        self._clear()
        for text in self.spoken[self.printed :]:
            self.out.write(text + "\n")
        self.printed = len(self.spoken)
        self.out.flush()

    def _clear(self) -> None:
        if self.live:
            self.out.write("\r\x1b[2K")


async def listen(
    *,
    engine: TranscriptionEngine | None,
    url: str | None,
    input_file: Path | None,
    device: str | None,
    speed: float,
    out: TextIO,
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def interrupted() -> None:  # the first Ctrl-C ends the stream cleanly; a second one quits at once
        stop.set()
        loop.remove_signal_handler(signal.SIGINT)

    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, interrupted)
    chunks = file_chunks(input_file, stop, speed) if input_file else microphone_chunks(stop, device)
    updates = stream_updates(url, chunks) if url else local_updates(engine, chunks)  # type: ignore[arg-type]
    view = TerminalView(out, live=out.isatty())
    status = 0
    if input_file is None:
        print("Listening... (Ctrl-C to stop)", file=sys.stderr)
    async for update in updates:
        view.show(update)
        status = 1 if update.get("type") == "error" else status
    view.finish()
    return status
