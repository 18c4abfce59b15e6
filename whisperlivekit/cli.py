"""`wlk`: serve (default), transcribe files, listen to the microphone, list or pull models, bench."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from whisperlivekit.bench.cli import add_bench_parser, run_bench
from whisperlivekit.config import Config, add_config_arguments, config_from_args
from whisperlivekit.output.formats import FORMATS

COMMANDS = ("serve", "transcribe", "listen", "models", "pull", "bench")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wlk", description="Real-time speech-to-text server.")
    commands = parser.add_subparsers(dest="command")
    serve = commands.add_parser("serve", help="Run the WebSocket server (default).")
    add_config_arguments(serve)
    transcribe = commands.add_parser("transcribe", help="Transcribe audio files.")
    transcribe.add_argument("files", nargs="+", type=Path)
    transcribe.add_argument("--format", choices=FORMATS, default="text")
    transcribe.add_argument("-o", "--output", type=Path, help="Output file (one input) or directory.")
    add_config_arguments(transcribe)
    listen = commands.add_parser(
        "listen",
        help="Transcribe the microphone live in the terminal (needs the 'listen' extra).",
        description="Live transcription of the microphone, with an in-process model or a running server.",
    )
    listen.add_argument("--url", help="A running server's /asr WebSocket (default: load the model here).")
    listen.add_argument("--input-device", help="sounddevice input device (name or index).")
    listen.add_argument("--input", type=Path, help="Play this audio file as the live source instead.")
    listen.add_argument("--speed", type=float, default=1.0, help="Playback speed of --input.")
    add_config_arguments(listen)
    models = commands.add_parser("models", help="List Whisper models available here or from packages.")
    models.add_argument("--json", action="store_true", help="Machine-readable output.")
    models.add_argument("--model-cache-dir", help="Where joined/downloaded weights are kept.")
    pull = commands.add_parser("pull", help="Fetch (hub) or assemble (packages) a model's weights.")
    pull.add_argument("name", help="A model name (tiny.en, base, small...) or a Hugging Face repo id.")
    pull.add_argument("--model-cache-dir", help="Where joined/downloaded weights are kept.")
    add_bench_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in (*COMMANDS, "-h", "--help"):
        argv.insert(0, "serve")
    args = build_parser().parse_args(argv)
    if args.command == "bench":
        return run_bench(args)
    if args.command == "models":
        return _models(args)
    if args.command == "pull":
        return _pull(args)
    config = config_from_args(args)
    logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "transcribe":
        return _transcribe(args, config)
    if args.command == "listen":
        return _listen(args, config)
    return _serve(config)


def _serve(config: Config) -> int:
    if config.ray:
        return _serve_on_ray(config)
    from whisperlivekit.memory import limit_arenas
    from whisperlivekit.server.app import create_app
    from whisperlivekit.server.shutdown import serve

    limit_arenas()  # before the models start their threads
    return serve(create_app(config=config), config)  # TLS, message cap, draining SIGTERM


def _serve_on_ray(config: Config) -> int:
    """`wlk serve --ray`: the same app on Ray Serve (docs/scaling.md)."""
    try:
        import ray.serve  # noqa: F401 -- a clear message before anything starts
    except ImportError:
        print("wlk serve --ray: Ray Serve is missing: pip install 'whisperlivekit[ray]'", file=sys.stderr)
        return 1
    from whisperlivekit.ray_serve.deployments import serve_on_ray

    serve_on_ray(config)
    return 0


def _transcribe(args: argparse.Namespace, config: Config) -> int:
    from whisperlivekit.audio.decoder import AudioDecodeError
    from whisperlivekit.engine import TranscriptionEngine
    from whisperlivekit.output.formats import format_lines
    from whisperlivekit.transcribe import transcribe_file

    # Files run on the CTranslate2 model, which LocalAgreement streams on: nothing else to load.
    engine = TranscriptionEngine(config.replace(backend_policy="localagreement"))
    status = 0
    for path in args.files:
        try:
            transcript = transcribe_file(engine, path, progress=sys.stderr.isatty())
        except AudioDecodeError as error:
            print(f"wlk: {path}: {error}", file=sys.stderr)
            status = 1
            continue
        text = format_lines(transcript.lines, args.format)
        if args.output is None:
            sys.stdout.write(text)
        else:
            target = args.output / f"{path.stem}.{args.format}" if args.output.is_dir() else args.output
            target.write_text(text, encoding="utf-8")
    engine.close()
    return status


def _listen(args: argparse.Namespace, config: Config) -> int:
    import asyncio

    from whisperlivekit.listen import check_microphone, listen

    if args.input is None:
        check_microphone()  # before loading a model for nothing
    engine = None
    if args.url is None:
        from whisperlivekit.engine import TranscriptionEngine

        engine = TranscriptionEngine(config.replace(pcm_input=True))
    try:
        return asyncio.run(
            listen(engine=engine, url=args.url, input_file=args.input, device=args.input_device,
                   speed=args.speed, out=sys.stdout)
        )  # fmt: skip
    finally:
        if engine is not None:
            engine.close()


def _models(args: argparse.Namespace) -> int:
    import json

    from whisperlivekit.asr.model_files import WHISPER_MODELS, packaged_models

    packaged = packaged_models()
    rows = []
    for name in WHISPER_MODELS:
        cached = _hf_cached(name, args.model_cache_dir)
        if name in packaged:
            where = "package: " + " + ".join(packaged[name])
        elif cached:
            where = f"Hugging Face cache: {cached}"
        else:
            where = f"hub (wlk pull {name})"
        rows.append({"name": name, "available": name in packaged or cached is not None, "source": where})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(row["name"]) for row in rows)
    print(f"{'MODEL':<{width}}  HERE  SOURCE")
    for row in rows:
        print(f"{row['name']:<{width}}  {'yes' if row['available'] else 'no ':<4}  {row['source']}")
    return 0


def _hf_cached(name: str, cache_dir: str | None) -> str | None:
    """The model's directory in the Hugging Face cache, looked up offline."""
    from faster_whisper.utils import download_model

    try:
        path = Path(download_model(name, local_files_only=True, cache_dir=cache_dir))
    except Exception:  # not cached (or a name the hub does not know): just not here
        return None
    return str(path) if (path / "model.bin").is_file() else None


def _pull(args: argparse.Namespace) -> int:
    from whisperlivekit.asr.model_files import ModelNotFoundError, resolve_model

    logging.basicConfig(level="INFO", format="%(message)s")
    try:
        files = resolve_model(args.name, cache_dir=args.model_cache_dir, download=True)
    except ModelNotFoundError as error:
        print(f"wlk pull: {error}", file=sys.stderr)
        return 1
    kind = "multilingual" if files.multilingual else "English-only"
    print(f"{files.name}: {files.path} ({files.source}, {kind})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
