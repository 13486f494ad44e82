"""The SQL quota ledger on both supported databases: PostgreSQL (the service's) and
SQLite (the embedded default). Reserving is one upsert that creates a new user's row
at the default quota less the unit taken, and takes nothing once it is spent."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from server.clock import system_clock
from server.config import Settings
from server.db.engine import create_engine
from server.db.migrate import upgrade_to_head
from server.db.models import UserQuotaRow
from server.db.repository import SqlRepository
from server.errors import QuotaExceeded


@pytest.fixture(params=["postgresql", "sqlite"])
async def engine(
    request: pytest.FixtureRequest, real_settings: Settings, tmp_path: Path
) -> AsyncIterator[AsyncEngine]:
    """A migrated database of each supported kind."""
    url = (
        real_settings.database_url
        if request.param == "postgresql"
        else f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    )
    engine = create_engine(url)
    await upgrade_to_head(engine)
    yield engine
    await engine.dispose()


async def test_units_are_taken_once_per_session_until_none_is_left(engine: AsyncEngine) -> None:
    repo = SqlRepository(engine=engine, clock=system_clock, default_quota=2)
    user = f"ledger-{uuid.uuid4().hex[:8]}"
    await repo.reserve_quota(user_id=user, session_id=f"{user}-a")
    assert await repo.get_quota(user_id=user) == 1  # created at 2, one taken
    await repo.reserve_quota(user_id=user, session_id=f"{user}-a")  # a resume
    assert await repo.get_quota(user_id=user) == 1
    await repo.reserve_quota(user_id=user, session_id=f"{user}-b")
    assert await repo.get_quota(user_id=user) == 0
    with pytest.raises(QuotaExceeded):
        await repo.reserve_quota(user_id=user, session_id=f"{user}-c")
    assert await repo.get_quota(user_id=user) == 0
    # The refused session holds nothing: releasing it gives nothing back.
    assert await repo.release_quota(session_id=f"{user}-c") is False
    assert await repo.release_quota(session_id=f"{user}-b") is True
    assert await repo.get_quota(user_id=user) == 1


async def test_a_zero_default_refuses_a_new_user_and_keeps_no_row(engine: AsyncEngine) -> None:
    repo = SqlRepository(engine=engine, clock=system_clock, default_quota=0)
    user = f"ledger-zero-{uuid.uuid4().hex[:8]}"
    with pytest.raises(QuotaExceeded):
        await repo.reserve_quota(user_id=user, session_id=f"{user}-a")
    async with engine.connect() as conn:  # the new row went with the refusal
        rows = await conn.scalar(
            select(func.count()).select_from(UserQuotaRow).where(UserQuotaRow.user_id == user)
        )
    assert rows == 0
    await repo.set_quota(user_id=user, remaining=1)
    await repo.reserve_quota(user_id=user, session_id=f"{user}-a")
    assert await repo.get_quota(user_id=user) == 0
