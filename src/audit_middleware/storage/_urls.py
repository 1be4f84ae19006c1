"""Database URLs: which ones we accept, and the driver each one runs on."""

from __future__ import annotations

import sqlalchemy.exc
from sqlalchemy.engine import URL, make_url

__all__ = ["async_url", "sync_url"]

# What the user may write -> the async driver we run it on.
_ASYNC_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
}
_SYNC_DRIVERS = {"postgresql+psycopg": "postgresql+psycopg", "sqlite+aiosqlite": "sqlite+pysqlite"}

_ACCEPTED = "postgresql+psycopg://, postgresql://, sqlite+aiosqlite:// or sqlite:///path"


def _scheme(url: str | URL) -> str:
    text = url.render_as_string(hide_password=True) if isinstance(url, URL) else url
    return text.split("://", 1)[0] if "://" in text else text


def async_url(url: str | URL) -> URL:
    """``url`` on the driver the store runs on (psycopg 3 or aiosqlite).

    Raises ``ValueError`` naming the scheme for anything but PostgreSQL and SQLite files.
    """
    if not isinstance(url, str | URL):
        raise TypeError(f"database url must be a str or sqlalchemy URL, not {type(url).__name__}")
    try:
        parsed = make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError) as exc:
        raise ValueError(f"not a database URL: {_scheme(url)!r}; expected {_ACCEPTED}") from exc
    driver = _ASYNC_DRIVERS.get(parsed.drivername)
    if driver is None:
        raise ValueError(
            f"unsupported database URL scheme {parsed.drivername!r}; expected {_ACCEPTED}"
        )
    if driver.startswith("sqlite") and parsed.database in (None, "", ":memory:"):
        # Each pooled connection would get its own empty database, and migrations and the relay
        # could never see the rows.
        raise ValueError(
            f"an in-memory SQLite database ({_scheme(url)}://) cannot be shared; "
            "give a file: sqlite:///path/to/audit.sqlite3"
        )
    return parsed.set(drivername=driver)


def sync_url(url: str | URL) -> URL:
    """``url`` on a synchronous driver (for Alembic): psycopg 3 or the standard sqlite3."""
    parsed = async_url(url)
    return parsed.set(drivername=_SYNC_DRIVERS[parsed.drivername])
