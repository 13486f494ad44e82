"""Engine construction and the one translation of database exceptions."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from server.errors import Internal, Reason, Unavailable, VidscanError


def create_engine(url: str) -> AsyncEngine:
    """An async engine for PostgreSQL (asyncpg) or SQLite (aiosqlite)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)


@contextlib.asynccontextmanager
async def map_db_errors(operation: str) -> AsyncIterator[None]:
    """The one place where SQLAlchemy/asyncpg/aiosqlite exceptions become ours."""
    try:
        yield
    except VidscanError:
        raise
    except (OperationalError, InterfaceError) as exc:
        raise Unavailable(
            Reason.DATABASE_UNAVAILABLE, f"database unavailable during {operation}"
        ) from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise Unavailable(
                Reason.DATABASE_UNAVAILABLE, f"database connection lost during {operation}"
            ) from exc
        raise Internal(Reason.DATABASE_ERROR, f"database refused {operation}") from exc
    except SQLAlchemyError as exc:
        raise Internal(Reason.DATABASE_ERROR, f"database failed {operation}") from exc
    except (OSError, ConnectionError) as exc:
        raise Unavailable(
            Reason.DATABASE_UNAVAILABLE, f"database unreachable during {operation}"
        ) from exc
