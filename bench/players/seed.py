"""Pre-seed the live sessions straight into Redis, with the service's own admit script and activity writer.

Every session is admitted once by ``EVALSHA admit`` with the keys of
``KeyLayout`` and the arguments ``StreamManager.admit`` sends, pipelined a
thousand at a time, and noted in a real ``StreamManager``'s activity buffer,
which writes the seen and at-limit indexes as a gunicorn worker's flusher does.
Redis then holds what 400,000 players would have left after their first
heartbeat, in seconds rather than the minutes that many first heartbeats over
HTTP take on two shared cores.
"""

from __future__ import annotations

import socket
import time

import hiredis
import redis

from heartbeat.edge.client_network import network_of
from heartbeat.limiter.keys import KeyLayout
from heartbeat.limiter.manager import StreamManager
from heartbeat.limiter.scripts import ADMIT, ALL_SCRIPTS
from heartbeat.store.scripts import load_scripts

BATCH = 1000
# The network the generator's requests come from: the seeded sessions play from it, so a
# stop without a token (the generator's) is accepted (stop.lua's network rule).
LOOPBACK_NETWORK = network_of("127.0.0.1")


def pack(*args: str | int | bytes) -> bytes:
    """One command in RESP."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def read_replies(sock: socket.socket, reader: hiredis.Reader, n: int) -> list:
    """Read ``n`` replies from ``sock`` (a Redis error raises)."""
    replies: list = []
    while len(replies) < n:
        reply = reader.gets()
        if reply is False:
            data = sock.recv(1 << 20)
            if not data:
                raise ConnectionError("Redis closed the connection")
            reader.feed(data)
        elif isinstance(reply, hiredis.ReplyError):
            raise RuntimeError(f"admit failed while seeding: {reply}")
        else:
            replies.append(reply)
    return replies


def seed(
    redis_url: str,
    key_prefix: str,
    sessions: list[tuple[str, str, str]],
    *,
    limit: int,
    session_ttl_seconds: int,
    activity_shards: int = 16,
) -> dict[str, float]:
    """Admit every (user, stream, session) once; the count admitted, those that were new, and the seconds it took."""
    started = time.monotonic()
    client = redis.Redis.from_url(redis_url)
    load_scripts(client, ALL_SCRIPTS)
    layout = KeyLayout(key_prefix, activity_shards)
    manager = StreamManager(
        client,
        key_prefix=key_prefix,
        default_limit=limit,
        session_ttl_seconds=session_ttl_seconds,
        eviction_cooldown_seconds=300,
        activity_shards=activity_shards,
    )
    kwargs = client.connection_pool.connection_kwargs
    sock = socket.create_connection((kwargs.get("host", "127.0.0.1"), kwargs.get("port", 6379)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if kwargs.get("db"):
        sock.sendall(pack("SELECT", kwargs["db"]))
    reader = hiredis.Reader()
    if kwargs.get("db"):
        read_replies(sock, reader, 1)
    ttl_ms = session_ttl_seconds * 1000
    admitted = new = 0
    try:
        for i in range(0, len(sessions), BATCH):
            chunk = sessions[i : i + BATCH]
            packed = []
            for user, stream, session in chunk:
                keys = layout.user_key_list(user)
                # StreamManager.admit's ARGV: no device name, reject_new, no session list, loopback network.
                args = (session, stream, limit, "default", ttl_ms, "", 0, 0, LOOPBACK_NETWORK, 0)
                packed.append(pack("EVALSHA", ADMIT.sha, len(keys), *keys, *args))
            sock.sendall(b"".join(packed))
            for (user, _stream, session), reply in zip(chunk, read_replies(sock, reader, len(chunk)), strict=True):
                code, active, got_limit, _pruned, now_ms = (int(v) for v in reply[:5])
                if code not in (0, 1):
                    raise RuntimeError(f"seeding refused {user}/{session} (outcome {code})")
                admitted += 1
                new += code == 1
                manager.activity.note(
                    user, session, now_ms, at_limit=active >= got_limit, new_session=code == 1, refusal=None
                )
            if i % (50 * BATCH) == 0:
                manager.flush_activity()
        manager.flush_activity()
    finally:
        sock.close()
        client.close()
    return {"sessions": admitted, "new": new, "seconds": round(time.monotonic() - started, 2)}
