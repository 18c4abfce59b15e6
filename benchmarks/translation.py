"""Live translation: latency (a line committed -> its translation arriving) and chrF where an English
reference exists. Each clip is replayed in real time to a `wlk serve` subprocess (EVAL.md "Replay").

    python benchmarks/translation.py --runs whisper bergamot --json benchmarks/results/translation.json

- whisper: base, Whisper task=translate, FLEURS Spanish and German (multi/fleurs_es, multi/fleurs_de)
  into English, plus the synthetic parallel clips whose English version is in the manifest
  (counting, "hello world", the pangram), the only English references there are for chrF;
- bergamot: tiny.en, FLEURS English (en/fleurs_en) into Portuguese (no Portuguese reference: latency only).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from whisperlivekit.bench.dataset import Utterance, load_manifest
from whisperlivekit.bench.runner import ServerProcess, with_query
from whisperlivekit.client import StreamResult, committed_text, decode_audio, stream_audio

SENTENCE_END = re.compile(r"[.!?。！？…]['\")\]]*$")
# English side of the synthetic parallel clips (multi/synthetic_pytest_audioeval/en/*).
PARALLEL = {"counting": "conteo comptage conteggio liczenie contagem ginti kazoeru jishu",
            "hello_world": "hola_mundo bonjour_monde ciao_mondo witaj_swiecie ola_mundo namaste_duniya "
                           "konnichiwa_sekai nihao_shijie",
            "quick_brown_fox": "pt/pangrama"}
WHISPER = ["--model", "base", "--translation-backend", "whisper"]
BERGAMOT = ["--model", "tiny.en", "--translation-backend", "bergamot"]
MULTI = ["multi/fleurs_de", "multi/fleurs_es", "multi/synthetic_pytest_audioeval"]
RUNS = {  # server options, target language, sets
    "whisper": (WHISPER, "en", MULTI),
    "base-no-translation": (WHISPER, "", MULTI[:2]),  # the ASR alone, for its timing
    "whisper-on-complete": ([*WHISPER, "--translate-on-complete"], "en", MULTI),
    "bergamot": (BERGAMOT, "pt", ["en/fleurs_en"]),
    "bergamot-on-complete": ([*BERGAMOT, "--translate-on-complete"], "pt", ["en/fleurs_en"]),
}
NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


@dataclass
class ClipResult:
    path: str
    language: str
    lines: int
    translated: int
    errors: int
    latencies_s: list[float] = field(default_factory=list)
    translation: str = ""
    english_reference: str | None = None
    asr_final_s: float | None = None  # the final transcript's arrival after the end of the audio


def chrf(hypotheses: list[str], references: list[str], order: int = 6, beta: float = 2.0) -> float:
    """Corpus chrF as sacrebleu's default computes it: character 1..6-grams, whitespace removed,
    F-beta (beta 2) per order averaged over the orders."""
    stats = [[0, 0, 0] for _ in range(order)]  # matches, hypothesis n-grams, reference n-grams
    for hypothesis, reference in zip(hypotheses, references, strict=True):
        hyp, ref = hypothesis.replace(" ", ""), reference.replace(" ", "")
        for n in range(1, order + 1):
            h = Counter(hyp[i : i + n] for i in range(len(hyp) - n + 1))
            r = Counter(ref[i : i + n] for i in range(len(ref) - n + 1))
            stats[n - 1][0] += sum((h & r).values())
            stats[n - 1][1] += sum(h.values())
            stats[n - 1][2] += sum(r.values())
    scores = []
    for matches, hyp_total, ref_total in stats:
        if hyp_total and ref_total:
            precision, recall = matches / hyp_total, matches / ref_total
            denominator = beta**2 * precision + recall
            scores.append((1 + beta**2) * precision * recall / denominator if denominator else 0.0)
    return 100 * sum(scores) / len(scores) if scores else 0.0


def normalize(text: str) -> str:
    """Lowercase, digits spelled out ("1, 2, 3" is a right translation of "uno dos tres"), no punctuation."""
    text = re.sub(r"\b(10|[0-9])\b", lambda m: f" {NUMBERS[int(m.group(1))]} ", text.lower())
    return " ".join(re.sub(r"[^\w\s]", " ", text).split())


def line_latencies(result: StreamResult) -> tuple[list[float], int, int, int]:
    """Per spoken line of the final update: time from its commit (its final text seen, and the line
    closed by a later line, a sentence end, or the end of the audio) to its translation arriving."""
    final = result.updates[-1].data["lines"]
    end_of_audio = result.t_end_of_audio or 0.0
    latencies, translated, errors, lines = [], 0, 0, 0
    for index, line in enumerate(final):
        if line["speaker"] < 0 or not line["text"].strip():
            continue
        lines += 1
        translated += bool(line.get("translation"))
        errors += "translation_error" in line
        committed = arrived = None
        for message in result.updates:
            current = message.data["lines"]
            if index >= len(current):
                continue
            seen = current[index]
            closed = (len(current) > index + 1 or SENTENCE_END.search(seen["text"])
                      or message.t >= end_of_audio)
            if committed is None and seen["text"] == line["text"] and closed:
                committed = message.t
            if arrived is None and (seen.get("translation") or "translation_error" in seen):
                arrived = message.t
        if committed is not None and arrived is not None:
            latencies.append(max(0.0, arrived - committed))
    return latencies, lines, translated, errors


def english_reference(utterance: Utterance, manifest: list[Utterance]) -> str | None:
    if not utterance.rel_path.startswith("multi/synthetic_pytest_audioeval/"):
        return None
    stem = utterance.rel_path.split("/", 2)[2].removesuffix(".wav")  # "es/conteo"
    for english, names in PARALLEL.items():
        if stem.split("/")[1] in names.split() or stem in names.split():
            return next(u.reference for u in manifest if u.rel_path.endswith(f"/en/{english}.wav"))
    return None


async def run_clips(
    ws_url: str, target: str, clips: list[Utterance], manifest: list[Utterance]
) -> list[ClipResult]:
    results = []
    for clip in clips:
        url = with_query(ws_url, language=clip.language, **({"target_language": target} if target else {}))
        result = await stream_audio(url, decode_audio(clip.path), speed=1.0)
        if result.error or not result.updates:
            print(f"{clip.rel_path}: {result.error}", file=sys.stderr)
            continue
        latencies, lines, translated, errors = line_latencies(result)
        final_text = committed_text(result.updates[-1].data)
        asr_final = next(m.t for m in result.updates if committed_text(m.data) == final_text)
        final = result.updates[-1].data["lines"]
        text = " ".join(line.get("translation", "") for line in final if line["speaker"] > 0).strip()
        after_audio = asr_final - (result.t_end_of_audio or 0.0)
        results.append(ClipResult(clip.rel_path, clip.language, lines, translated, errors, latencies, text,
                                  english_reference(clip, manifest), after_audio))
        print(f"{clip.rel_path}: {lines} lines, {translated} translated, latency {latencies}: {text[:90]}",
              file=sys.stderr)
    return results


def summarise(results: list[ClipResult]) -> dict:
    latencies = sorted(x for r in results for x in r.latencies_s)
    scored = [r for r in results if r.english_reference]
    finals = [r.asr_final_s for r in results if r.asr_final_s is not None]
    p90 = latencies[min(len(latencies) - 1, int(0.9 * len(latencies)))] if latencies else None
    return {
        "clips": len(results),
        "lines": sum(r.lines for r in results),
        "translated": sum(r.translated for r in results),
        "errors": sum(r.errors for r in results),
        "latency_median_s": statistics.median(latencies) if latencies else None,
        "latency_p90_s": p90,
        "chrf_synthetic": chrf([r.translation for r in scored], [r.english_reference for r in scored])
        if scored else None,
        "chrf_synthetic_normalized": chrf(
            [normalize(r.translation) for r in scored], [normalize(r.english_reference) for r in scored]
        ) if scored else None,
        "chrf_clips": len(scored),
        "asr_final_median_s": statistics.median(finals) if finals else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", choices=sorted(RUNS), default=["bergamot", "whisper"])
    parser.add_argument("--sets", nargs="+", help="only these sets (e.g. multi/fleurs_es)")
    parser.add_argument("--rescore", action="store_true", help="recompute the summaries of --json, no replay")
    parser.add_argument("--json", type=Path, help="write every clip's result and the summaries here")
    parser.add_argument("--limit", type=int, default=0, help="at most this many clips per run (0: all)")
    args = parser.parse_args()
    manifest = load_manifest()
    if args.rescore:
        report = json.loads(args.json.read_text())
        for data in report.values():
            data["summary"] = summarise([ClipResult(**clip) for clip in data["clips"]])
        args.runs = []
    else:
        report = json.loads(args.json.read_text()) if args.json and args.json.exists() else {}
    for name in args.runs:
        server_args, target, sets = RUNS[name]
        clips = [u for u in manifest if u.set_name in sets or u.rel_path.rsplit("/", 2)[0] in sets]
        clips = [u for u in clips if u.language != target and (not args.sets or u.set_name in args.sets
                                                                or u.rel_path.rsplit("/", 2)[0] in args.sets)]
        clips = clips[: args.limit or None]
        with ServerProcess([*server_args, "--store", "none"]) as server:
            results = asyncio.run(run_clips(server.ws_url, target, clips, manifest))
        # A run over some sets replaces those clips and keeps the others of an earlier run.
        clips = {clip["path"]: clip for clip in report.get(name, {}).get("clips", [])}
        clips.update({r.path: asdict(r) for r in results})
        merged = list(clips.values())
        report[name] = {"summary": summarise([ClipResult(**c) for c in merged]), "clips": merged}
        print(name, json.dumps(report[name]["summary"]), file=sys.stderr)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, ensure_ascii=False))
    for name, data in report.items():
        print(f"{name}: {json.dumps(data['summary'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
