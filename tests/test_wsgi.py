"""The WSGI entry point gunicorn serves: player paths on the lean handler, the rest on Django's."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
from django.core import signals

from streamlimit.wsgi import application


def call(method: str, path: str, body: bytes = b"", **extra: str) -> tuple[str, dict[str, str], bytes]:
    """Call the WSGI application as gunicorn would; returns status, headers and body."""
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8080",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1:8080",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": io.StringIO(),
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        **extra,
    }
    seen: dict[str, object] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: object = None) -> None:
        seen["status"], seen["headers"], seen["raw_headers"] = status, dict(headers), list(headers)

    result = application(environ, start_response)
    try:
        content = b"".join(result)
    finally:
        if hasattr(result, "close"):
            result.close()
    CALLS.append(seen)
    return seen["status"], seen["headers"], content  # type: ignore[return-value]


# What start_response saw in each call() (the raw header list, duplicates and order included).
CALLS: list[dict[str, object]] = []


@pytest.fixture
def request_signals() -> Iterator[list[str]]:
    """The names of the request signals sent while the test runs."""
    sent: list[str] = []

    def started(**_: object) -> None:
        sent.append("request_started")

    def finished(**_: object) -> None:
        sent.append("request_finished")

    signals.request_started.connect(started)
    signals.request_finished.connect(finished)
    yield sent
    signals.request_started.disconnect(started)
    signals.request_finished.disconnect(finished)


def test_a_heartbeat_is_answered_by_the_player_handler_without_request_signals(key_prefix, request_signals) -> None:
    body = json.dumps({"userId": "alice", "streamId": "movie", "sessionId": "tv"}).encode()
    status, headers, content = call("POST", "/heartbeat", body)
    assert status == "200 OK" and json.loads(content)["allowed"] is True
    assert headers["Content-Type"] == "application/json" and headers["X-Correlation-ID"]
    assert request_signals == []


def test_bad_input_on_a_player_path_is_still_json(key_prefix, request_signals) -> None:
    status, _, content = call("POST", "/heartbeat", b"not json")
    assert status == "400 Bad Request" and json.loads(content)["code"] == "invalid_request"
    assert request_signals == []


@pytest.mark.django_db
def test_staff_paths_go_through_djangos_full_handler_with_its_signals(request_signals) -> None:
    status, headers, _ = call("GET", "/dashboard/")
    assert status == "302 Found" and "/admin/login/" in headers["Location"]
    assert request_signals == ["request_started", "request_finished"]


@pytest.mark.parametrize("path", ["/heartbeat//", "/HEARTBEAT", "/Heartbeat/stop/now", "/healthz/", "/readyz/x"])
def test_unknown_player_paths_get_a_json_404(path: str, request_signals) -> None:
    status, headers, content = call("POST", path, b"{}")
    assert status == "404 Not Found" and headers["Content-Type"] == "application/json"
    assert json.loads(content)["code"] == "not_found" and headers["X-Correlation-ID"]
    assert request_signals == []


@pytest.mark.django_db
def test_unknown_staff_paths_still_get_djangos_page() -> None:
    status, headers, _ = call("GET", "/no-such-page/")
    assert status == "404 Not Found" and headers["Content-Type"].startswith("text/html")


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_probes_answer_other_methods_with_a_json_405(path: str) -> None:
    status, headers, content = call("POST", path, b"{}")
    assert status == "405 Method Not Allowed" and headers["Allow"] == "GET, HEAD"
    assert json.loads(content)["code"] == "method_not_allowed"


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_probes_answer_head(path: str) -> None:
    status, _, _ = call("HEAD", path)
    assert status == "200 OK"


@pytest.mark.parametrize(("method", "path"), [("POST", "/heartbeat"), ("POST", "/heartbeat/stop"), ("GET", "/healthz")])
def test_a_host_outside_allowed_hosts_gets_a_json_400_on_player_paths(method: str, path: str, key_prefix) -> None:
    body = json.dumps({"userId": "alice", "streamId": "movie", "sessionId": "tv"}).encode()
    status, _, content = call(method, path, body, HTTP_HOST="evil.example.com")
    assert status == "400 Bad Request" and json.loads(content)["code"] == "invalid_host"


def test_a_refused_host_touches_no_key(key_prefix, redis_client) -> None:
    body = json.dumps({"userId": "alice", "streamId": "movie", "sessionId": "tv"}).encode()
    call("POST", "/heartbeat", body, HTTP_HOST="evil.example.com")
    assert list(redis_client.scan_iter(match=f"{key_prefix}:*")) == []


def test_a_chunked_body_is_read(key_prefix) -> None:
    body = json.dumps({"userId": "alice", "streamId": "movie", "sessionId": "tv"}).encode()
    status, _, content = call("POST", "/heartbeat", body, CONTENT_LENGTH="", HTTP_TRANSFER_ENCODING="chunked")
    assert status == "200 OK" and json.loads(content)["allowed"] is True


def test_a_chunked_body_over_the_cap_gets_413(key_prefix, redis_client) -> None:
    body = b'{"userId": "' + b"a" * 20_000 + b'"}'
    status, _, content = call("POST", "/heartbeat", body, CONTENT_LENGTH="", HTTP_TRANSFER_ENCODING="chunked")
    assert status == "413 Request Entity Too Large" and json.loads(content)["code"] == "payload_too_large"
    assert list(redis_client.scan_iter(match=f"{key_prefix}:*")) == []


def test_a_player_answer_carries_its_length(key_prefix) -> None:
    # As CommonMiddleware gives staff pages: gunicorn then sends no chunked framing.
    body = json.dumps({"userId": "alice", "streamId": "movie", "sessionId": "tv"}).encode()
    for method, path in [("POST", "/heartbeat"), ("GET", "/heartbeat"), ("POST", "/heartbeat//"), ("GET", "/healthz")]:
        _, headers, content = call(method, path, body)
        assert headers["Content-Length"] == str(len(content)), (method, path)


def test_a_player_answer_carries_each_player_header_once_and_last(key_prefix) -> None:
    # The lean handler appends them as raw pairs (heartbeat/edge/handler.py), in the order
    # the request-log middleware sets them on the full handler.
    body = json.dumps({"userId": "alice", "streamId": "movie", "sessionId": "tv"}).encode()
    for method, path in [("POST", "/heartbeat"), ("GET", "/heartbeat"), ("POST", "/heartbeat//"), ("GET", "/healthz")]:
        call(method, path, body, HTTP_X_CORRELATION_ID="id-1")
        names = [name for name, _ in CALLS[-1]["raw_headers"]]  # type: ignore[union-attr]
        assert len(names) == len({n.lower() for n in names}), (path, names)
        tail = ["X-Correlation-ID", "X-Content-Type-Options", "Cache-Control", "Content-Length"]
        assert names[-4:] == tail, (path, names)
        assert CALLS[-1]["headers"]["X-Correlation-ID"] == "id-1"  # type: ignore[index]


def test_the_player_handler_follows_a_changed_urlconf(key_prefix, settings) -> None:
    body = json.dumps({"userId": "alice", "streamId": "movie", "sessionId": "tv"}).encode()
    assert call("POST", "/heartbeat", body)[0] == "200 OK"
    settings.ROOT_URLCONF = "dashboard.urls"  # no /heartbeat there
    assert call("POST", "/heartbeat", body)[0] == "404 Not Found"
    settings.ROOT_URLCONF = "streamlimit.urls"
    assert call("POST", "/heartbeat", body)[0] == "200 OK"


class _BrokenStream(io.RawIOBase):
    """A request body whose connection broke while it was read."""

    def read(self, size: int = -1) -> bytes:
        raise OSError("connection reset by peer")


def test_a_body_that_cannot_be_read_gets_a_json_500_with_the_correlation_id(key_prefix, json_log_lines) -> None:
    status, headers, content = call(
        "POST", "/heartbeat", CONTENT_LENGTH="60", HTTP_X_CORRELATION_ID="broken-1", **{"wsgi.input": _BrokenStream()}
    )
    assert status == "500 Internal Server Error" and headers["Allow"] == "POST, OPTIONS"
    assert json.loads(content) == {"code": "internal_error", "correlationId": "broken-1"}
    [unhandled] = [line for line in json_log_lines() if line["message"] == "unhandled error"]
    assert unhandled["correlationId"] == "broken-1" and "UnreadablePostError" in unhandled["stack"]
