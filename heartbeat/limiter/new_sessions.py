"""New sessions per client network per minute, for anonymous players (NEW_SESSIONS_PER_NETWORK_PER_MINUTE).

Without tokens anyone may invent accounts, and each new one leaves a session
and analytics in Redis: one client could fill it. The count lives in Redis
(one key per network and minute, shared by every worker and server) and is
touched only when a session is newly admitted, never by a repeat heartbeat.
A session that takes a network over its rate is ended at once and answered
429; every worker then remembers the network until the minute ends and asks
the admit script to refuse its new sessions without writing anything, so a
flood costs one script call per request and nothing that outlives it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from redis import Redis
from redis.cluster import RedisCluster

from heartbeat.limiter.keys import KeyLayout

# Networks over their rate a worker remembers at once (the oldest are forgotten first;
# a forgotten one costs one more INCR and is remembered again).
REMEMBERED_NETWORKS = 10_000


class NewSessionRate:
    """Counts new sessions per network and minute in Redis; remembers, per process, the networks over it."""

    def __init__(self, client: Redis | RedisCluster, keys: KeyLayout, per_minute: int) -> None:
        self.client = client
        self.keys = keys
        self.per_minute = per_minute
        self._over: OrderedDict[str, int] = OrderedDict()  # network -> the epoch minute it is over in
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """Whether there is a rate (0 turns it off)."""
        return self.per_minute > 0

    def is_over(self, network: str, now_ms: int) -> bool:
        """Whether this process knows ``network`` is over its rate in the minute of ``now_ms``."""
        with self._lock:
            minute = self._over.get(network)
            if minute is None:
                return False
            if minute != now_ms // 60_000:
                del self._over[network]
                return False
            return True

    def count_new_session(self, network: str, now_ms: int) -> bool:
        """Count one new session of ``network`` (Redis' time ``now_ms``); True when it is one too many."""
        minute = now_ms // 60_000
        key = self.keys.new_sessions_of(network, minute)
        pipe = self.client.pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, 120)
        count, _ = pipe.execute()
        if int(count) <= self.per_minute:
            return False
        with self._lock:
            self._over[network] = minute
            self._over.move_to_end(network)
            while len(self._over) > REMEMBERED_NETWORKS:
                self._over.popitem(last=False)
        return True


def seconds_left_in_minute(now_ms: int) -> int:
    """Whole seconds until the minute of ``now_ms`` ends (1 to 60): the 429's ``Retry-After``."""
    return max(1, 60 - (now_ms // 1000) % 60)
