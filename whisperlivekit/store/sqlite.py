"""The default store: one SQLite file (WAL), in the user data directory unless a path is given.

WAL with synchronous=NORMAL: a commit is in the WAL file (written, not fsynced) when it returns, so a
killed server (SIGKILL) loses nothing; only a power cut may lose the last commits.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

from whisperlivekit.store.base import SqlStore

FILE_NAME = "sessions.sqlite3"


def default_path() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("whisperlivekit", appauthor=False)) / FILE_NAME


class SqliteStore(SqlStore):
    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path else default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():  # transcripts: owner only, from the first byte
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        # Never open and close another descriptor on the file once SQLite has it: closing any
        # descriptor drops the process's POSIX locks on it (and corrupts concurrent writers).
        connection = sqlite3.connect(self.path, check_same_thread=False, timeout=10.0)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute("PRAGMA foreign_keys=ON")
        for suffix in ("", "-wal", "-shm"):  # by path: no descriptor
            with contextlib.suppress(OSError):
                os.chmod(f"{self.path}{suffix}", 0o600)
        super().__init__(connection)
