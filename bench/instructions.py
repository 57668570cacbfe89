"""Instructions per heartbeat in the service's own Python code, counted by valgrind: unmoved by the machine's load.

Usage (it starts itself under valgrind; needs REDIS_URL, as ``make bench``)::

    .venv/bin/python -m devtools.with_redis .venv/bin/python -m bench.instructions [--requests 2000] [--tokens]
        [--policy bench/family-policy.json]

Throughput on this shared 2-core machine moves by a third between two runs
minutes apart; the instructions a heartbeat executes do not. This drives
``streamlimit.wsgi:application`` in one process, with gevent's monkey-patching
as gunicorn's gevent worker does (so the body deadline runs), logging as
``make run`` (JSON lines, sent to /dev/null here) and the real Redis: the
``bench/heartbeat.lua`` mix at a smaller scale (500 users with 1 to 3
sessions, prefilled; 95% repeat heartbeats, 5% new sessions of full accounts,
answered 400). Only the measured requests are counted (``callgrind_control``
switches the instrumentation on and off around them), and the once-a-second
activity and metrics batches are held back meanwhile (their share per
heartbeat depends on the request rate, which valgrind slows down 50-fold).

What it leaves out: gunicorn's HTTP parsing and socket writes (the same for
every version of the service), and the kernel's side of system calls (a
system call counts as a few instructions here: time saved by calling
``os.getpid()`` less does not show). Prints one line:
``INSTRUCTIONS per_request=N requests=N``.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import uuid

USERS = 500
SECRET = "instructions-bench-" + "x" * 32


def _run_under_valgrind(argv: list[str]) -> int:
    handle, out = tempfile.mkstemp(prefix="callgrind-", suffix=".out")
    os.close(handle)
    command = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}",
        sys.executable,
        "-m",
        "bench.instructions",
        "--inside",
        *argv,
    ]
    done = subprocess.run(command, stderr=subprocess.PIPE, text=True, check=False)
    sys.stderr.write("".join(line + "\n" for line in done.stderr.splitlines() if not line.startswith("==")))
    collected = re.search(r"Collected : (\d+)", done.stderr)
    requests = re.search(r"^MEASURED requests=(\d+)", done.stderr, re.M)
    if done.returncode or not collected or not requests:
        sys.stderr.write(done.stderr[-3000:])
        return done.returncode or 1
    n = int(requests.group(1))
    print(f"INSTRUCTIONS per_request={int(collected.group(1)) // n} requests={n}")
    os.unlink(out)
    return 0


def _environ(body: bytes, token: str | None) -> dict[str, object]:
    environ: dict[str, object] = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/heartbeat",
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "RAW_URI": "/heartbeat",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8123",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "50000",
        "HTTP_HOST": "127.0.0.1:8123",
        "HTTP_USER_AGENT": "bench",
        "CONTENT_TYPE": "application/json",
        "HTTP_CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.url_scheme": "http",
        "wsgi.version": (1, 0),
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    if token is not None:
        environ["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return environ


def _inside(requests: int, tokens: bool, counted: bool = True, policy: str = "") -> int:
    from gevent import monkey

    monkey.patch_all()
    prefix = "bench-instr-" + uuid.uuid4().hex[:8]
    os.environ.update(
        DJANGO_SETTINGS_MODULE="streamlimit.settings",
        REDIS_KEY_PREFIX=prefix,
        PLAYER_AUTH="anonymous",
        NEW_SESSIONS_PER_NETWORK_PER_MINUTE="0",
        LOG_LEVEL="INFO",
        SESSION_TTL_SECONDS="600",
        ACTIVITY_FLUSH_SECONDS="10",
    )
    if tokens:
        os.environ["PLAYBACK_TOKEN_KEYS"] = f"bench={SECRET}"
    # The service's JSON log lines go to stdout: away with them, as a file would take them.
    sys.stdout.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    import redis

    try:
        from heartbeat.limiter.tokens import issue_token
    except ImportError:  # a checkout from before heartbeat/ had its four rooms (issue 18)
        from heartbeat.tokens import issue_token  # type: ignore[no-redef]
    from streamlimit.wsgi import application

    try:
        from heartbeat.limiter.activity import FLUSHER
    except ImportError:  # before issue 18's layout
        from heartbeat.activity import FLUSHER  # type: ignore[no-redef]

    rng = random.Random(7)
    sessions = {f"user{n}": [f"s{k}" for k in range(rng.choice((1, 1, 2, 2, 3)))] for n in range(USERS)}
    user_tokens = {user: issue_token("bench", SECRET, user, ttl_seconds=3600, now=time.time()) for user in sessions}
    full = [user for user, ids in sessions.items() if len(ids) == 3]

    if policy:
        # As `make bench`'s policy target: the document in force, and every body carrying the
        # policy's inputs (one device per session, quality hd).
        import json

        from heartbeat.services import get_policy_store

        with open(policy, encoding="utf-8") as document:
            get_policy_store().apply(json.load(document), applied_by="bench", reason="instructions")

    def heartbeat(user: str, session: str) -> None:
        body = b'{"userId":"%s","streamId":"movie","sessionId":"%s"' % (user.encode(), session.encode())
        if policy:
            body += b',"deviceClass":"tv","deviceId":"%s-%s","quality":"hd"' % (user.encode(), session.encode())
        body += b"}"
        environ = _environ(body, user_tokens[user] if tokens else None)
        answer = application(environ, lambda status, headers, exc_info=None: None)
        b"".join(answer)

    def steady(count: int) -> None:
        users = list(sessions)
        for n in range(count):
            if n % 20 == 19:
                heartbeat(rng.choice(full), f"new{n}")
            else:
                user = rng.choice(users)
                heartbeat(user, rng.choice(sessions[user]))

    try:
        for user, ids in sessions.items():
            for session in ids:
                heartbeat(user, session)
        # The once-a-second batches (activity, metrics) are left out: their cost per heartbeat
        # depends on how many heartbeats a second brings, and valgrind brings few. The flusher
        # thread flushes once more at the end of its sleep, then sleeps past the measurement.
        FLUSHER._interval = 10**6
        time.sleep(10.5)
        steady(500)  # warm-up: caches, the token cache, the resolver
        if counted:
            subprocess.run(["callgrind_control", "--instr=on", str(os.getpid())], capture_output=True, check=True)
        steady(requests)
        if counted:
            subprocess.run(["callgrind_control", "--instr=off", str(os.getpid())], capture_output=True, check=True)
        print(f"MEASURED requests={requests}", file=sys.stderr)
        FLUSHER.flush_all()
    finally:
        client = redis.Redis.from_url(os.environ["REDIS_URL"])
        keys = list(client.scan_iter(match=prefix + ":*", count=1000))
        if keys:
            client.unlink(*keys)
    return 0


def main() -> int:
    """Parse the options; run the measurement under valgrind (or, with ``--inside``, be the measured process)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--tokens", action="store_true", help="HS256 playback tokens on, one per user")
    parser.add_argument(
        "--plain",
        action="store_true",
        help="no valgrind, nothing counted (to profile: py-spy record -- python -m bench.instructions --plain)",
    )
    parser.add_argument(
        "--policy", default="", metavar="FILE", help="a policy document in force (bench/family-policy.json)"
    )
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside or args.plain:
        return _inside(args.requests, args.tokens, counted=not args.plain, policy=args.policy)
    return _run_under_valgrind(
        [
            "--requests",
            str(args.requests),
            *(["--tokens"] if args.tokens else []),
            *(["--policy", args.policy] if args.policy else []),
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
