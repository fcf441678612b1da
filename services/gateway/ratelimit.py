"""Per-client rate limit shared by every gateway replica: a token bucket (GCRA) in Redis.

One key per client holds the bucket's "theoretical arrival time"; a Lua script reads the
Redis clock, decides and updates atomically, so replicas never race and clocks never drift.
Memory is one small key per active client, expiring when its bucket is full again.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger("masterx.gateway.ratelimit")

# KEYS[1] bucket key; ARGV[1] emission interval (microseconds per request); ARGV[2] burst.
# Returns {allowed (0/1), remaining, retry_after_ms, reset_after_ms}.
_GCRA = """
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - burst * interval
if allow_at > now then
  return {0, 0, math.ceil((allow_at - now) / 1000), math.ceil((tat - now) / 1000)}
end
local ttl_ms = math.ceil((new_tat - now) / 1000)
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.max(ttl_ms, 1))
local remaining = math.floor((now - allow_at) / interval)
return {1, remaining, 0, ttl_ms}
"""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    retry_after_s: int
    reset_after_s: int


class RateLimiter:
    """``await check(client_id)`` -> :class:`Decision`; ``None`` when Redis could not be asked."""

    def __init__(self, redis: aioredis.Redis, per_minute: int, burst: int, prefix: str) -> None:
        self.redis = redis
        self.per_minute = per_minute
        self.burst = burst or per_minute
        self.prefix = prefix
        self.interval_us = max(1, 60_000_000 // per_minute)  # >= 1 us: a huge limit must not divide by 0
        self._script = redis.register_script(_GCRA)

    def key(self, client_id: str) -> str:
        digest = hashlib.sha256(client_id.encode()).hexdigest()[:24]
        return f"{self.prefix}gw:rl:{digest}"

    async def check(self, client_id: str) -> Decision | None:
        try:
            allowed, remaining, retry_ms, reset_ms = await self._script(
                keys=[self.key(client_id)], args=[self.interval_us, self.burst]
            )
        except (RedisError, OSError) as exc:
            log.warning("rate limit check failed", extra={"error": type(exc).__name__})
            return None
        return Decision(
            allowed=bool(allowed),
            limit=self.per_minute,
            remaining=min(max(int(remaining), 0), self.burst),
            retry_after_s=max(1, -(-int(retry_ms) // 1000)) if not allowed else 0,
            reset_after_s=-(-int(reset_ms) // 1000),
        )
