"""Write the fuzz seed corpus: 0.6 s of jfk.wav in each container the live decoder meets.

python benchmarks/fuzz_corpus/make_corpus.py ../shared/eval/classic/jfk.wav
"""

from __future__ import annotations

import io
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from whisperlivekit.client import _webm_chunks, decode_audio, to_pcm16

HERE = Path(__file__).resolve().parent
FORMATS = {  # file name: (container, codec, rate)
    "seed.ogg": ("ogg", "libopus", 48000),
    "seed.mp3": ("mp3", "libmp3lame", 16000),
    "seed.wav": ("wav", "pcm_s16le", 16000),
    "seed.flac": ("flac", "flac", 16000),
}


def encode(samples: np.ndarray, container: str, codec: str, rate: int) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        pcm16 = np.frombuffer(to_pcm16(samples), dtype="<i2")[None, :]
        frame = av.AudioFrame.from_ndarray(pcm16, format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = 16000, 0, Fraction(1, 16000)
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return buffer.getvalue()


def main(wav: str) -> None:
    samples = decode_audio(wav)[16000 : 16000 + 9600]  # 0.6 s of speech
    (HERE / "seed.webm").write_bytes(b"".join(_webm_chunks(samples, 0.1)))
    (HERE / "seed.pcm").write_bytes(to_pcm16(samples))
    for name, (container, codec, rate) in FORMATS.items():
        (HERE / name).write_bytes(encode(samples, container, codec, rate))


if __name__ == "__main__":
    main(sys.argv[1])
