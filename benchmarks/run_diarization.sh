#!/usr/bin/env bash
# The diarization figures of benchmarks/diarization.md, in order (about 20 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
EVAL=${WLK_EVAL_DIR:-../shared/eval}
mkdir -p benchmarks/results
# 1. The default backend in-process: DER and compute per second of audio against the latency.
nice -n 19 $PY benchmarks/diarization_sweep.py "$EVAL/diar/ami_pyannote_debug" --latency 1 2 3 5 \
    | tee benchmarks/results/diarization-latency-sweep.jsonl
# 2. DER through the server, streamed in real time, diarization alone (--no-transcription).
nice -n 19 $PY -m whisperlivekit.bench.diarization der "$EVAL/diar/ami_pyannote_debug" \
    --json benchmarks/results/diarization-ami-der.json
# 3. cpWER through the server with transcription (the server's default policy and model).
nice -n 19 $PY -m whisperlivekit.bench.diarization cpwer "$EVAL/diar/synthetic_tts" \
    --json benchmarks/results/diarization-tts-cpwer.json
# 4. Does diarization slow the ASR? The same 90 s stream, with and without it.
for label in asr-only asr+diarization; do
    extra=""; [ "$label" = "asr+diarization" ] && extra="--diarization"
    nice -n 19 .venv/bin/wlk bench --set en/hifitts_6097 --max-duration 90 --label "$label" \
        --server-args="$extra" --no-offline --json "benchmarks/results/diarization-asr-impact-$label.json"
done
