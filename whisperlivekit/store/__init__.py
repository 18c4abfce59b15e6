"""Transcript stores: `--store sqlite` (default), `sqlite:///PATH`, `postgresql://...`, `none`."""

from __future__ import annotations

from whisperlivekit.store.base import Store, StoredSession

__all__ = ["Store", "StoredSession", "check_store_url", "open_store"]


def check_store_url(url: str) -> None:
    """Config validation: fail at start-up, not at the first session."""
    if url in ("none", "sqlite") or url.startswith(("sqlite://", "postgresql://", "postgres://")):
        return
    raise ValueError(f"store {url!r}: expected sqlite, sqlite:///PATH, postgresql://... or none")


def open_store(url: str) -> Store | None:
    check_store_url(url)
    if url == "none":
        return None
    if url.startswith(("postgresql://", "postgres://")):
        from whisperlivekit.store.postgres import PostgresStore

        return PostgresStore(url)
    from whisperlivekit.store.sqlite import SqliteStore

    return SqliteStore(url.removeprefix("sqlite://") or None if url != "sqlite" else None)
