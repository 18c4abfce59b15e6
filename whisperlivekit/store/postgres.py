"""The store in PostgreSQL (`--store postgresql://user:pass@host/db`), for deployments; psycopg 3.

Each update is its own committed transaction, so what a client was sent is on the server's disk.
"""

from __future__ import annotations

import contextlib

from whisperlivekit.store.base import SqlStore


class PostgresStore(SqlStore):
    placeholder = "%s"

    def __init__(self, url: str) -> None:
        try:
            import psycopg
        except ImportError as error:
            raise RuntimeError(
                "--store postgresql://... needs psycopg 3: pip install 'whisperlivekit[postgres]'"
            ) from error
        self.url = url
        super().__init__(psycopg.connect(url, connect_timeout=10))

    def _reconnect(self, error: Exception) -> bool:
        import psycopg

        if not (self._conn.closed or isinstance(error, psycopg.OperationalError)):
            return False  # a real SQL error, not a lost connection
        with contextlib.suppress(Exception):
            self._conn.close()
        self._conn = psycopg.connect(self.url, connect_timeout=10)
        return True
