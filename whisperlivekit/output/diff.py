"""`mode=diff` on `/asr`: one snapshot, then only what changed between consecutive transcript updates.

A full update resends every committed line, so over an hour-long session each update grows to
hundreds of KB. A diff sends the number of leading lines that are unchanged (`keep_lines`), the lines
after them (`new_lines`), and the other fields that changed. Applying it (`whisperlivekit.client.
apply_diff`, algorithm in docs/protocol.md) reproduces the full update exactly, whatever changed:
a growing last line, new lines, or even a rewritten earlier line (it is simply resent).
"""

from __future__ import annotations

import copy
from typing import Any

SNAPSHOT = "snapshot"
DIFF = "diff"
# Fields of a diff message itself; a state never carries them.
ENVELOPE = ("type", "seq")


class DiffEncoder:
    """Turns a session's successive full `transcript` updates into a snapshot and then diffs."""

    def __init__(self) -> None:
        self._state: dict[str, Any] | None = None
        self._seq = 0

    def encode(self, update: dict[str, Any]) -> dict[str, Any]:
        state = {key: value for key, value in update.items() if key not in ENVELOPE}
        previous, self._state = self._state, copy.deepcopy(state)
        seq, self._seq = self._seq, self._seq + 1
        if previous is None:
            return {"type": SNAPSHOT, "seq": seq, **state}
        return {"type": DIFF, "seq": seq, **diff_states(previous, state)}


def diff_states(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """What turns state `old` into state `new` (see `whisperlivekit.client.apply_diff`)."""
    old_lines, new_lines = old.get("lines", []), new.get("lines", [])
    keep = 0
    for before, after in zip(old_lines, new_lines, strict=False):
        if before != after:
            break
        keep += 1
    fields = {key: value for key, value in new.items() if key != "lines"}
    message: dict[str, Any] = {
        "keep_lines": keep,
        "new_lines": new_lines[keep:],
        "changed": {key: value for key, value in fields.items() if key not in old or old[key] != value},
    }
    removed = [key for key in old if key not in new and key != "lines"]
    if removed:
        message["removed"] = removed
    return message
