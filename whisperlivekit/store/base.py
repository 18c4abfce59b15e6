"""What a transcript store keeps, and the SQL both the SQLite and PostgreSQL stores share.

A session is a row; its lines are rows keyed by (session, index). Lines only grow (every line but
the last is final), so a store update is an upsert of the lines from the first one that changed:
each committed line is written when it is committed, in its own transaction.
"""

from __future__ import annotations

import contextlib
import json
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from whisperlivekit.output.transcript import Line

T = TypeVar("T")


@dataclass
class StoredSession:
    id: str
    created: float  # unix time
    updated: float
    ended: bool  # the stream reached its end (ready_to_stop) or the client left
    lines: list[Line] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def stream_until(self) -> float:
        """Where a resumed stream continues on the session's clock."""
        return max((line.end for line in self.lines), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created": self.created,
            "updated": self.updated,
            "ended": self.ended,
            "meta": self.meta,
            "lines": [line.to_dict() for line in self.lines],
        }


class Store(ABC):
    """Blocking API (call it from a worker thread); thread-safe."""

    @abstractmethod
    def create(self, session_id: str, created: float, meta: dict[str, Any]) -> None: ...

    @abstractmethod
    def save_lines(self, session_id: str, first: int, lines: Sequence[Line], updated: float) -> None:
        """Upsert lines[first:] of the session (the ones from `first` on, given here as `lines`)."""

    @abstractmethod
    def end(self, session_id: str, updated: float) -> None: ...

    @abstractmethod
    def reopen(self, session_id: str, updated: float) -> None:
        """A resumed session is live again."""

    @abstractmethod
    def get(self, session_id: str) -> StoredSession | None: ...

    @abstractmethod
    def delete(self, session_id: str) -> bool: ...

    @abstractmethod
    def purge(self, updated_before: float) -> int:
        """Delete sessions not updated since `updated_before`; how many went."""

    @abstractmethod
    def close(self) -> None: ...


SCHEMA = (
    """CREATE TABLE IF NOT EXISTS wlk_sessions (
        id TEXT PRIMARY KEY, created DOUBLE PRECISION NOT NULL, updated DOUBLE PRECISION NOT NULL,
        ended INTEGER NOT NULL DEFAULT 0, meta TEXT NOT NULL DEFAULT '{}')""",
    """CREATE TABLE IF NOT EXISTS wlk_lines (
        session_id TEXT NOT NULL REFERENCES wlk_sessions(id) ON DELETE CASCADE,
        idx INTEGER NOT NULL, speaker INTEGER NOT NULL, text TEXT NOT NULL,
        start_s DOUBLE PRECISION NOT NULL, end_s DOUBLE PRECISION NOT NULL,
        translation TEXT NOT NULL DEFAULT '', detected_language TEXT,
        PRIMARY KEY (session_id, idx))""",
    "CREATE INDEX IF NOT EXISTS wlk_sessions_updated ON wlk_sessions(updated)",
)
UPSERT_LINE = """INSERT INTO wlk_lines
    (session_id, idx, speaker, text, start_s, end_s, translation, detected_language)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (session_id, idx) DO UPDATE SET speaker = excluded.speaker, text = excluded.text,
    start_s = excluded.start_s, end_s = excluded.end_s, translation = excluded.translation,
    detected_language = excluded.detected_language"""


class SqlStore(Store):
    """The store over a DB-API connection; subclasses open it and say their placeholder."""

    placeholder = "?"

    def __init__(self, connection: Any) -> None:
        self._conn = connection
        self._lock = threading.Lock()  # one connection, used from worker threads
        with self._lock:
            for statement in SCHEMA:
                self._conn.execute(statement)
            self._conn.commit()

    def _reconnect(self, error: Exception) -> bool:
        """After `error`, replace a lost connection and say so (a database server restarted)."""
        return False

    def _sql(self, query: str) -> str:
        return query if self.placeholder == "?" else query.replace("?", self.placeholder)

    def _transaction(self, work: Callable[[Any], T]) -> T:
        """`work(cursor)` in one committed transaction; retried once on a fresh connection."""
        with self._lock:
            for attempt in (0, 1):
                try:
                    result = work(self._conn.cursor())
                    self._conn.commit()
                    return result
                except Exception as error:
                    with contextlib.suppress(Exception):
                        self._conn.rollback()
                    if attempt or not self._reconnect(error):
                        raise
            raise AssertionError("unreachable")

    def _run(self, query: str, *rows: Sequence[Any]) -> int:
        """Execute once per row, in one transaction; rows affected."""

        def work(cursor: Any) -> int:
            count = 0
            for row in rows or ((),):
                cursor.execute(self._sql(query), tuple(row))
                count += max(cursor.rowcount, 0)
            return count

        return self._transaction(work)

    def _fetch(self, query: str, *args: Any) -> list[tuple]:
        def work(cursor: Any) -> list[tuple]:
            cursor.execute(self._sql(query), args)
            return cursor.fetchall()  # and commit: PostgreSQL would keep the read transaction open

        return self._transaction(work)

    def create(self, session_id: str, created: float, meta: dict[str, Any]) -> None:
        self._run(
            "INSERT INTO wlk_sessions (id, created, updated, ended, meta) VALUES (?, ?, ?, 0, ?)",
            (session_id, created, created, json.dumps(meta)),
        )

    def save_lines(self, session_id: str, first: int, lines: Sequence[Line], updated: float) -> None:
        rows = [
            (session_id, first + i, line.speaker, line.text, line.start, line.end, line.translation,
             line.detected_language)
            for i, line in enumerate(lines)
        ]  # fmt: skip

        def work(cursor: Any) -> None:
            for row in rows:
                cursor.execute(self._sql(UPSERT_LINE), row)
            cursor.execute(
                self._sql("UPDATE wlk_sessions SET updated = ? WHERE id = ?"), (updated, session_id)
            )

        self._transaction(work)

    def end(self, session_id: str, updated: float) -> None:
        self._run("UPDATE wlk_sessions SET ended = 1, updated = ? WHERE id = ?", (updated, session_id))

    def reopen(self, session_id: str, updated: float) -> None:
        self._run("UPDATE wlk_sessions SET ended = 0, updated = ? WHERE id = ?", (updated, session_id))

    def get(self, session_id: str) -> StoredSession | None:
        rows = self._fetch("SELECT created, updated, ended, meta FROM wlk_sessions WHERE id = ?", session_id)
        if not rows:
            return None
        created, updated, ended, meta = rows[0]
        lines = [
            Line(int(speaker), text, float(start), float(end), translation or "", language)
            for speaker, text, start, end, translation, language in self._fetch(
                "SELECT speaker, text, start_s, end_s, translation, detected_language FROM wlk_lines "
                "WHERE session_id = ? ORDER BY idx",
                session_id,
            )
        ]
        return StoredSession(session_id, float(created), float(updated), bool(ended), lines, json.loads(meta))

    def delete(self, session_id: str) -> bool:
        self._run("DELETE FROM wlk_lines WHERE session_id = ?", (session_id,))
        return self._run("DELETE FROM wlk_sessions WHERE id = ?", (session_id,)) > 0

    def purge(self, updated_before: float) -> int:
        self._run(
            "DELETE FROM wlk_lines WHERE session_id IN (SELECT id FROM wlk_sessions WHERE updated < ?)",
            (updated_before,),
        )
        return self._run("DELETE FROM wlk_sessions WHERE updated < ?", (updated_before,))

    def close(self) -> None:
        with self._lock:
            self._conn.close()
