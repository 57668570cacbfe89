"""The raw bytes a real gunicorn answers to a fixed list of requests, to compare two versions of the service.

Usage (REDIS_URL set, e.g. through ``python -m devtools.with_redis``)::

    .venv/bin/python bench/answer_bytes.py CHECKOUT OUT_FILE

It starts CHECKOUT's gunicorn (one worker, tokens optional with a throw-away
HS256 key, one allowed CORS origin) on a free port of 127.0.0.1, sends 27
requests, each on its own connection (heartbeats up to a refusal, bad bodies,
a bad Host, CORS, probes, a 404, good, expired, mismatched and limited
tokens, /sessions, stops), and writes every answer's bytes, with ``Date``,
the random correlation id and the session times masked. Two checkouts' files
must be identical: ``diff`` them. Its Redis keys are deleted at the end.
"""

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import jwt
import redis

checkout, out = sys.argv[1], sys.argv[2]
SECRET = "k" * 40


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def tok(**c):
    c.setdefault("exp", 4_000_000_000)
    return jwt.encode(c, SECRET, algorithm="HS256", headers={"kid": "k1"})


def reqs(prefix):
    def b(data: dict) -> bytes:
        return json.dumps(data).encode()

    json_type = "Content-Type: application/json\r\n"

    def post(path, body, extra=""):
        return (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{json_type}{extra}Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )

    u = "u"
    out = []
    for i in range(4):
        out.append(post("/heartbeat", b({"userId": u, "streamId": "s", "sessionId": f"s{i}"})))
    out.append(post("/heartbeat", b({"userId": u, "streamId": "s", "sessionId": "s0", "deviceName": "TV"})))
    out.append(post("/heartbeat", b"{bad"))
    out.append(post("/heartbeat", b"[]"))
    out.append(post("/heartbeat", b({"userId": "", "streamId": "s", "sessionId": "x"})))
    out.append(b"POST /heartbeat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n{}")
    out.append(
        post("/heartbeat", b({"userId": u, "streamId": "s", "sessionId": "s1"}), "Origin: https://www.example.com\r\n")
    )
    out.append(
        b"OPTIONS /heartbeat HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: https://www.example.com\r\n"
        b"Access-Control-Request-Method: POST\r\n\r\n"
    )
    out.append(b"OPTIONS /heartbeat HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    out.append(b"GET /heartbeat HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    out.append(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    out.append(b"GET /HEARTBEAT/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    out.append(
        post("/heartbeat", b({"userId": u, "streamId": "s", "sessionId": "s1"}), "Host2: x\r\n").replace(
            b"Host: 127.0.0.1", b"Host: evil.example"
        )
    )
    out.append(post("/heartbeat/stop", b({"userId": u, "sessionId": "s1"})))
    # tokens
    out.append(
        post("/heartbeat", b({"streamId": "s", "sessionId": "t1"}), f"Authorization: Bearer {tok(sub='tu')}\r\n")
    )
    out.append(
        post("/heartbeat", b({"streamId": "s", "sessionId": "t1"}), f"Authorization: Bearer {tok(sub='tu')}\r\n")
    )
    out.append(
        post(
            "/heartbeat",
            b({"userId": "other", "streamId": "s", "sessionId": "t1"}),
            f"Authorization: Bearer {tok(sub='tu')}\r\n",
        )
    )
    out.append(
        post(
            "/heartbeat",
            b({"streamId": "s", "sessionId": "t2"}),
            f"Authorization: Bearer {tok(sub='tu', sid='t1')}\r\n",
        )
    )
    out.append(
        post(
            "/heartbeat",
            b({"streamId": "s", "sessionId": "t2"}),
            f"Authorization: Bearer {tok(sub='tu', sid='t1')}\r\n",
        )
    )
    out.append(
        post(
            "/heartbeat",
            b({"streamId": "s", "sessionId": "t3"}),
            f"Authorization: Bearer {tok(sub='tu', exp=1000)}\r\n",
        )
    )
    out.append(post("/heartbeat", b({"streamId": "s", "sessionId": "t3"}), "Authorization: Bearer abc\r\n"))
    out.append(
        post(
            "/heartbeat",
            b({"streamId": "s", "sessionId": "t3"}),
            f"Authorization: Bearer {tok(sub='tu', maxStreams=1)}\r\n",
        )
    )
    out.append(
        post(
            "/heartbeat",
            b({"streamId": "s", "sessionId": "t4"}),
            f"Authorization: Bearer {tok(sub='tu', maxStreams=1)}\r\n",
        )
    )
    out.append(f"GET /sessions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {tok(sub='tu')}\r\n\r\n".encode())
    out.append(post("/heartbeat/stop", b({"userId": "tu", "sessionId": "t1", "token": tok(sub="tu")}), ""))
    return out


port = free_port()
prefix = "answers-" + uuid.uuid4().hex[:8]
env = dict(
    os.environ,
    PLAYER_AUTH="anonymous",
    HOST="127.0.0.1",
    PORT=str(port),
    GUNICORN_WORKERS="1",
    REDIS_KEY_PREFIX=prefix,
    PLAYBACK_TOKEN_KEYS=f"k1={SECRET}",
    PLAYBACK_TOKENS_REQUIRED="false",
    PLAYER_ALLOWED_ORIGINS="https://www.example.com",
    STREAMLIMIT_VAR_DIR=os.path.join(tempfile.gettempdir(), "answer-bytes-" + os.path.basename(checkout)),
    NEW_SESSIONS_PER_NETWORK_PER_MINUTE="0",
)
srv = subprocess.Popen(
    [f"{checkout}/.venv/bin/gunicorn", "--config", "gunicorn.conf.py", "streamlimit.wsgi:application"],
    cwd=checkout,
    env=env,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
)
try:
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    time.sleep(0.5)
    lines = []
    for r in reqs(prefix):
        s = socket.create_connection(("127.0.0.1", port), 30)
        s.sendall(r.replace(b"HTTP/1.1\r\n", b"HTTP/1.1\r\nConnection: close\r\n", 1))
        data = b""
        while True:
            c = s.recv(65536)
            if not c:
                break
            data += c
        s.close()
        data = re.sub(rb"Date: [^\r]*", b"Date: X", data)
        data = re.sub(rb"(X-Correlation-ID|X-Request-ID): [^\r]*", rb"\1: X", data, flags=re.I)
        data = re.sub(rb'"(startedAt|lastHeartbeatAt)":"[^"]*"', rb'"\1":"T"', data)
        lines.append(data.decode("utf-8", "replace"))
    with open(out, "w") as handle:
        handle.write("\n=====\n".join(lines))
finally:
    srv.terminate()
    srv.wait()

    c = redis.Redis.from_url(os.environ["REDIS_URL"])
    ks = list(c.scan_iter(match=prefix + "*", count=1000))
    if ks:
        c.unlink(*ks)
