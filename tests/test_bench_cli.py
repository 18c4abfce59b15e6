"""`wlk bench`: the table and plots on a hand-made result, a server that fails to start, and one short real
run (its own server subprocess on the packaged tiny.en, jfk.wav replayed in real time)."""

from __future__ import annotations

import json
import math
import sys

import pytest

from whisperlivekit.bench import cli as bench_cli
from whisperlivekit.bench.runner import ServerProcess
from whisperlivekit.config import Config

FIGURES = (
    "wer",
    "offline_wer",
    "committed_p50",
    "committed_p90",
    "first_p50",
    "first_p90",
    "lag_growth",
    "drain_s",
    "offline_rtf",
    "file_rtf",
    "peak_rss_mb",
    "steady_rss_mb",
)


def _doc() -> dict:
    words = [
        {"end_s": float(i), "committed_latency": 1.0 + 0.1 * i, "first_latency": 0.5 + 0.1 * i}
        for i in range(10)
    ]
    summary = dict.fromkeys(FIGURES, 0.5) | {
        "n_streams": 1,
        "n_errors": 0,
        "wer": 0.061,
        "offline_wer": 0.097,
    }
    run = {"label": "localagreement/tiny.en", "set": "en/hifitts_6097", "audio_duration_s": 332.5}
    rounds = [
        {"n": 1, "ok": True, "lag_growth": [0.1], "summary": {"committed_p50": 1.5}},
        {"n": 2, "ok": False, "lag_growth": [3.0, None], "summary": {"committed_p50": 9.0}},
    ]
    capacity = {
        "label": "localagreement/tiny.en",
        "set": "en/hifitts_6097",
        "audio_duration_s": 179.6,
        "threshold_s": 1.0,
        "capacity": 1,
        "rounds": rounds,
    }
    return {"runs": [run | {"summary": summary, "streams": [{"words": words}]}], "capacity": [capacity]}


def test_table_and_plots_from_json(tmp_path, capsys):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(_doc()))
    merged = tmp_path / "merged.json"
    args = ["--from-json", str(path), str(path), "--plot", str(tmp_path / "plots"), "--json", str(merged)]
    assert bench_cli.main(args) == 0
    table = capsys.readouterr().out
    assert table.count("localagreement/tiny.en  en/hifitts_6097  332") == 2
    assert "6.1%" in table and "9.7%" in table and "1:0.10 2:3.00✗" in table
    assert len(json.loads(merged.read_text())["runs"]) == 2
    pngs = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert pngs == [
        "capacity_localagreement-tiny.en_en-hifitts_6097.png",
        "latency_localagreement-tiny.en_en-hifitts_6097.png",
        "summary.png",
    ]
    assert all((tmp_path / "plots" / p).read_bytes()[:4] == b"\x89PNG" for p in pngs)


def test_targets_pass_policy_and_model_through():
    args = bench_cli.build_parser().parse_args(
        ["--model", "tiny.en", "base", "--policy", "simulstreaming", "--server-args", "--min-chunk-size 0.5"]
    )
    targets = bench_cli.make_targets(args)
    assert [t.server_args for t in targets] == [
        ["--model", m, "--backend-policy", "simulstreaming", "--min-chunk-size", "0.5"]
        for m in ("tiny.en", "base")
    ]
    assert targets[1].describe() == "simulstreaming/base"
    url = bench_cli.make_targets(
        bench_cli.build_parser().parse_args(["--url", "ws://h:1/asr", "--label", "up"])
    )
    assert url[0].url == "ws://h:1/asr" and url[0].describe() == "up" and url[0].model == "tiny.en"
    (up,) = bench_cli.make_targets(
        bench_cli.build_parser().parse_args(["--server-cmd", "/v/bin/wlk --port {port}"])
    )
    assert up.server_cmd == ["/v/bin/wlk", "--port", "{port}"] and up.describe() == "wlk (tiny.en)"
    for bad in (
        ["--url", "ws://h:1/asr", "--model", "a", "b"],
        ["--url", "ws://h:1/asr", "--server-cmd", "x"],
    ):
        with pytest.raises(SystemExit):
            bench_cli.make_targets(bench_cli.build_parser().parse_args(bad))


FAKE_SERVER = """
import http.server, json, sys, time
started = time.monotonic()
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"status": "ok", "ready": time.monotonic() - started > 0.6}).encode()
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
        self.wfile.write(body)
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Health).serve_forever()
"""


def test_foreign_server_command_waits_until_ready():
    # upstream's /health answers 200 with "ready": false while it loads: wait for true
    with ServerProcess(command=[sys.executable, "-c", FAKE_SERVER, "{port}"]) as server:
        assert server.health == {"status": "ok", "ready": True}
        assert server.command[-1] == str(server.port) and server.proc.poll() is None
    assert server.proc.poll() is not None  # stopped on exit


def test_server_that_cannot_start_reports_why():
    with (
        pytest.raises(RuntimeError, match="no-such-policy"),
        ServerProcess(["--backend-policy", "no-such-policy"]),
    ):
        pass


@pytest.mark.timeout(600)
def test_real_run_on_jfk(tmp_path, eval_root, capsys):
    out, plots = tmp_path / "jfk.json", tmp_path / "plots"
    status = bench_cli.main(
        [
            "--set",
            "classic/jfk.wav",
            "--json",
            str(out),
            "--plot",
            str(plots),
            "--cache-dir",
            str(tmp_path),
            "-q",
        ]
    )
    assert status == 0
    data = json.loads(out.read_text())
    assert data["command"].startswith("wlk bench --set classic/jfk.wav") and data["machine"]["cores"] >= 1
    (run,) = data["runs"]
    label = f"{Config().backend_policy}/tiny.en"  # the server's defaults
    assert run["label"] == label and run["server"]["health"]["model"] == "tiny.en"
    s = run["summary"]
    assert all(s[k] is not None and math.isfinite(s[k]) for k in FIGURES), s
    assert s["n_errors"] == 0 and s["n_streams"] == 1
    assert s["wer"] <= 0.2 and s["offline_wer"] <= 0.2 and s["file_wer"] <= 0.2
    # jfk is 11 s: words appear within seconds of being spoken, commits follow, nothing runs away
    assert -0.2 < s["first_p50"] <= s["committed_p50"] < 6.0 and s["committed_p90"] < 10.0
    assert abs(s["lag_growth"]) < 5.0 and 0.0 <= s["drain_s"] < 5.0
    assert 0.0 < s["offline_rtf"] < 1.0 and 0.0 < s["file_rtf"] < 1.0
    assert 50.0 < s["steady_rss_mb"] <= s["peak_rss_mb"] < 4000.0
    assert s["n_timed_words"] >= 18  # of 22 reference words
    words = run["streams"][0]["words"]
    assert all(0.0 < w["end_s"] <= 11.1 for w in words)
    assert (plots / "summary.png").is_file() and (
        plots / f"latency_{label.replace('/', '-')}_classic-jfk.wav.png"
    ).is_file()
    assert label in capsys.readouterr().out


def test_diarization_set_is_scored_with_der(tmp_path, eval_root):
    """`--set diar/…` (RTTM references, no manifest rows) goes to the diarization benchmark: one AMI
    excerpt streamed through a real server at 4x, scored with DER."""
    folder = tmp_path / "diar" / "one"
    folder.mkdir(parents=True)
    for suffix in (".wav", ".rttm", ".uem"):
        (folder / f"trn00{suffix}").symlink_to(eval_root / "diar" / "ami_pyannote_debug" / f"trn00{suffix}")
    (tmp_path / "manifest.tsv").write_text("path\n")
    out = tmp_path / "der.json"
    manifest = str(tmp_path / "manifest.tsv")
    argv = ["--set", "diar/one", "--manifest", manifest, "--speed", "4", "--json", str(out)]
    assert bench_cli.main(argv) == 0
    data = json.loads(out.read_text())
    (row,) = data["rows"]
    assert row["file"] == "trn00.wav" and row["ref_speakers"] == 3 and row["speakers"] >= 1
    assert data["summary"]["files"] == 1 and 0.0 <= data["summary"]["der"] < 0.8


def test_diarization_and_transcription_sets_are_run_apart():
    with pytest.raises(SystemExit, match="apart"):
        bench_cli.main(["--set", "diar/ami_pyannote_debug", "en/ljspeech"])
