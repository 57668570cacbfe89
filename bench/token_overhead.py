"""CPU per heartbeat with and without playback tokens, in one process: ``.venv/bin/python bench/token_overhead.py``.

Sends heartbeats through Django's test client (the whole view, middleware and
a real Redis round trip; no gunicorn, no HTTP) and reports the process's CPU
time per request (``time.process_time``, which a busy machine disturbs much
less than wall-clock throughput): without tokens; with HS256 tokens seen for
the first time (full verification); with the same tokens again (remembered).
Runs under its own Redis key prefix and deletes its keys after.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "streamlimit.settings")
os.environ["REDIS_KEY_PREFIX"] = f"bench-overhead-{os.getpid()}"
SECRET = os.urandom(32).hex()
os.environ["PLAYBACK_TOKEN_KEYS"] = f"bench={SECRET}"

import django  # noqa: E402

django.setup()

import jwt  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import override_settings  # noqa: E402

from heartbeat.services import get_stream_manager  # noqa: E402
from streamlimit.logging import SINK  # noqa: E402

USERS, ROUNDS = 2000, 5


def per_request_cpu(client: Client, headers: list[dict[str, str]], bodies: list[str]) -> float:
    start = time.process_time()
    for header, body in zip(headers, bodies, strict=True):
        response = client.post("/heartbeat", body, content_type="application/json", headers=header)
        assert response.status_code == 200, response.content
    return (time.process_time() - start) / len(bodies) * 1e6


def main() -> None:
    SINK.target = open(os.devnull, "wb")  # noqa: SIM115  (the JSON request lines, as in production, unread)
    client = Client(HTTP_HOST="localhost")
    bodies = [json.dumps({"userId": f"user-{i}", "streamId": "m", "sessionId": "s"}) for i in range(USERS)]
    results: dict[str, list[float]] = {"no tokens": [], "tokens, first use": [], "tokens, again": []}
    try:
        for _ in range(ROUNDS):
            with override_settings(PLAYBACK_TOKEN_KEYS={}):
                results["no tokens"].append(per_request_cpu(client, [{}] * USERS, bodies))
            expires = int(time.time()) + 3600
            headers = [
                {
                    "Authorization": "Bearer "
                    + jwt.encode(
                        {"sub": f"user-{i}", "exp": expires, "n": time.time_ns()}, SECRET, headers={"kid": "bench"}
                    )
                }
                for i in range(USERS)
            ]
            results["tokens, first use"].append(per_request_cpu(client, headers, bodies))
            results["tokens, again"].append(per_request_cpu(client, headers, bodies))
    finally:
        get_stream_manager().flush_activity()
        get_stream_manager().purge()
    print(f"CPU per heartbeat, median of {ROUNDS} rounds of {USERS}:")
    for name, values in results.items():
        print(f"  {name:18} {statistics.median(values):6.0f} us")


if __name__ == "__main__":
    main()
