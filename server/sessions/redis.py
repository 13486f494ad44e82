"""SessionStore on Redis: one hash per session, one key per stream lock.

Every replica sees the same sessions. State transitions and lock release are Lua
scripts so that they are atomic without WATCH/MULTI round trips. Redis errors are
translated in ``map_redis_errors`` only.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import datetime

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from server.errors import Internal, Reason, Unavailable
from server.redis_client import redis_client
from server.sessions.port import RETENTION, SessionRecord, SessionState, UploadIntent

_PREFIX = "vidscan:session:"

_TRANSITION = """
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'video_id', ARGV[3]) end
return 1
"""

_SAVE_PROGRESS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local current = tonumber(redis.call('HGET', KEYS[1], 'committed_bytes') or '0')
if tonumber(ARGV[1]) < current then return 0 end
redis.call('HSET', KEYS[1], 'committed_bytes', ARGV[1], 'progress', ARGV[2])
return 1
"""

_COMPLETE = """
if redis.call('HGET', KEYS[1], 'state') ~= 'active' then return 0 end
local current = tonumber(redis.call('HGET', KEYS[1], 'committed_bytes') or '0')
local committed = math.max(tonumber(ARGV[2]), current)
redis.call('HSET', KEYS[1], 'state', 'completed', 'video_id', ARGV[1],
           'committed_bytes', tostring(committed), 'progress', '')
return 1
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_REFRESH = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


@contextlib.asynccontextmanager
async def map_redis_errors(operation: str) -> AsyncIterator[None]:
    """The one place where redis-py's exceptions become vidscan errors."""
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        raise Unavailable(
            Reason.SESSION_STORE_UNAVAILABLE, f"session store unreachable during {operation}"
        ) from exc
    except RedisError as exc:
        raise Internal(Reason.SESSION_STORE_ERROR, f"session store failed {operation}") from exc


def _key(session_id: str) -> str:
    return _PREFIX + session_id


def _lock_key(session_id: str) -> str:
    return _PREFIX + session_id + ":lock"


class RedisSessionStore:
    def __init__(self, *, client: aioredis.Redis) -> None:
        self._redis = client

    @classmethod
    def from_url(cls, url: str) -> RedisSessionStore:
        return cls(client=redis_client(url))

    async def create(self, record: SessionRecord) -> None:
        mapping = {
            "user_id": record.user_id,
            "state": record.state.value,
            "created_at": record.created_at.isoformat(),
            "expires_at": record.expires_at.isoformat(),
            "max_bytes": str(record.max_bytes),
            "committed_bytes": str(record.committed_bytes),
            "video_id": record.video_id,
            "intent": record.intent.to_json() if record.intent else "",
        }
        async with (
            map_redis_errors("create session"),
            self._redis.pipeline(transaction=True) as pipe,
        ):
            pipe.hset(_key(record.session_id), mapping=dict(mapping.items()))
            pipe.expireat(_key(record.session_id), record.expires_at + RETENTION)
            await pipe.execute()

    async def get(self, session_id: str) -> SessionRecord | None:
        async with map_redis_errors("read session"):
            raw = await self._redis.hgetall(_key(session_id))
        data = {str(k): str(v) for k, v in raw.items()}
        if not data or "user_id" not in data:
            return None
        return SessionRecord(
            session_id=session_id,
            user_id=data["user_id"],
            state=SessionState(data["state"]),
            created_at=datetime.fromisoformat(data["created_at"]),
            expires_at=datetime.fromisoformat(data["expires_at"]),
            max_bytes=int(data["max_bytes"]),
            committed_bytes=int(data.get("committed_bytes", "0")),
            video_id=data.get("video_id", ""),
            progress=data.get("progress", ""),
            intent=UploadIntent.from_json(data.get("intent", "")),
        )

    async def transition(
        self,
        session_id: str,
        *,
        expected: SessionState,
        new: SessionState,
        video_id: str = "",
    ) -> bool:
        async with map_redis_errors("update session"):
            done = await self._redis.eval(
                _TRANSITION, 1, _key(session_id), expected.value, new.value, video_id
            )
        return bool(done)

    async def save_progress(self, session_id: str, *, committed_bytes: int, progress: str) -> bool:
        async with map_redis_errors("save upload progress"):
            done = await self._redis.eval(
                _SAVE_PROGRESS, 1, _key(session_id), str(committed_bytes), progress
            )
        return bool(done)

    async def complete(self, session_id: str, *, video_id: str, committed_bytes: int) -> bool:
        async with map_redis_errors("complete session"):
            done = await self._redis.eval(
                _COMPLETE, 1, _key(session_id), video_id, str(committed_bytes)
            )
        return bool(done)

    async def acquire_lock(self, session_id: str, *, owner: str, ttl_seconds: float) -> bool:
        async with map_redis_errors("lock session"):
            taken = await self._redis.set(
                _lock_key(session_id), owner, nx=True, px=int(ttl_seconds * 1000)
            )
        return bool(taken)

    async def refresh_lock(self, session_id: str, *, owner: str, ttl_seconds: float) -> bool:
        async with map_redis_errors("refresh session lock"):
            done = await self._redis.eval(
                _REFRESH, 1, _lock_key(session_id), owner, str(int(ttl_seconds * 1000))
            )
        return bool(done)

    async def release_lock(self, session_id: str, *, owner: str) -> None:
        async with map_redis_errors("unlock session"):
            await self._redis.eval(_RELEASE, 1, _lock_key(session_id), owner)

    async def ping(self) -> None:
        async with map_redis_errors("ping"):
            await self._redis.ping()

    async def close(self) -> None:
        await self._redis.aclose()
