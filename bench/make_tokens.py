"""Print one HS256 account token per simulated user of bench/heartbeat.lua, one a line, in user order.

Run by bench/run.sh for the token run: ``BENCH_SECRET=<hex> python bench/make_tokens.py USERS``.
The key id is ``bench`` (the run sets ``PLAYBACK_TOKEN_KEYS=bench=<secret>``); tokens expire in
two hours, longer than any run.
"""

from __future__ import annotations

import os
import sys
import time

import jwt


def main(users: int) -> None:
    secret = os.environ["BENCH_SECRET"]
    expires = int(time.time()) + 7200
    lines = (
        jwt.encode({"sub": f"user-{i:06d}", "exp": expires}, secret, algorithm="HS256", headers={"kid": "bench"})
        for i in range(1, users + 1)
    )
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(int(sys.argv[1]))
