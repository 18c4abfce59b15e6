"""`wlk`: serve (default), transcribe files, bench."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from whisperlivekit.bench.cli import add_bench_parser, run_bench
from whisperlivekit.config import Config, add_config_arguments, config_from_args
from whisperlivekit.output.formats import FORMATS

COMMANDS = ("serve", "transcribe", "bench")


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
    add_bench_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in (*COMMANDS, "-h", "--help"):
        argv.insert(0, "serve")
    args = build_parser().parse_args(argv)
    if args.command == "bench":
        return run_bench(args)
    config = config_from_args(args)
    logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "transcribe":
        return _transcribe(args, config)
    return _serve(config)


def _serve(config: Config) -> int:
    import uvicorn

    from whisperlivekit.server.app import create_app

    uvicorn.run(
        create_app(config=config), host=config.host, port=config.port, log_level=config.log_level.lower()
    )
    return 0


def _transcribe(args: argparse.Namespace, config: Config) -> int:
    from whisperlivekit.audio.decoder import AudioDecodeError
    from whisperlivekit.engine import TranscriptionEngine
    from whisperlivekit.output.formats import format_lines
    from whisperlivekit.transcribe import transcribe_file

    engine = TranscriptionEngine(config)
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


if __name__ == "__main__":
    sys.exit(main())
