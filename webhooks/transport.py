"""One POST to a webhook endpoint: to a checked address, no redirects, timeouts, a capped answer.

http.client, not a higher-level client: it follows no redirect, and the
connection goes to the address the SSRF guard checked, with the name only in
the Host header and the TLS server name.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from dataclasses import dataclass

from webhooks.targets import RefusedTargetError, Target, resolve

USER_AGENT = "StreamLimit-Webhooks/1"
_READ_CHUNK = 16_384


@dataclass(frozen=True)
class Answer:
    """What one attempt came to: ``reason`` is "" on a 2xx, else why it failed (a metric label)."""

    status: int  # 0 when no HTTP answer came
    # "", "3xx", "4xx", "5xx", "timeout", "connect", "bad_response", "refused_target" (and "bad_url": delivery.py)
    reason: str
    detail: str
    truncated: bool = False  # the body was longer than the cap; the rest was not read

    @property
    def delivered(self) -> bool:
        """Whether the endpoint took the event (any 2xx)."""
        return not self.reason


class _OneWrite:
    """Sends a request's head and body in one write: one packet and one system call, not two.

    ``http.client`` writes the head, then the body; for small JSON bodies the
    second write costs as much as the first. ``hold_head`` makes the next
    ``send`` (the head) wait for the one after (the body).
    """

    _held: bytes | None = None
    hold_head = False

    def send(self, data: bytes) -> None:  # type: ignore[override]
        if self.hold_head:
            self.hold_head, self._held = False, bytes(data)
            return
        if self._held is not None:
            data, self._held = self._held + data, None
        super().send(data)  # type: ignore[misc]


class _PinnedHTTP(_OneWrite, http.client.HTTPConnection):
    """An HTTP connection to a checked address, whatever the host name resolves to later."""

    def __init__(self, target: Target, address: str, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _PinnedHTTPS(_OneWrite, http.client.HTTPSConnection):
    """An HTTPS connection to a checked address, verified against the host name."""

    def __init__(self, target: Target, address: str, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


class Poster:
    """POSTs to one target over a kept-alive connection (one Poster per thread and endpoint)."""

    def __init__(self, target: Target, *, timeout: float, max_body_bytes: int, allow_private: bool) -> None:
        self.target = target
        self.timeout = timeout
        self.max_body_bytes = max_body_bytes
        self.allow_private = allow_private
        self._connection: _PinnedHTTP | _PinnedHTTPS | None = None

    def close(self) -> None:
        """Close the kept-alive connection, if any."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _connect(self) -> _PinnedHTTP | _PinnedHTTPS:
        # Resolved and checked for each new connection, so a name that moves to a private address is caught.
        address = resolve(self.target, self.allow_private)[0]
        kind = _PinnedHTTPS if self.target.scheme == "https" else _PinnedHTTP
        return kind(self.target, address, self.timeout)

    def post(self, body: bytes, headers: dict[str, str]) -> Answer:
        """Send one request; never raises for what the endpoint or the network does."""
        deadline = time.monotonic() + self.timeout
        try:
            if self._connection is None:
                self._connection = self._connect()
            connection = self._connection
            connection.hold_head = bool(body)
            connection.request(
                "POST",
                self.target.path,
                body=body,
                headers={
                    "Host": self.target.host_header,
                    "Content-Type": "application/json",
                    "User-Agent": USER_AGENT,
                    **headers,
                },
            )
            response = connection.getresponse()
            truncated = self._drain(response, deadline)
        except RefusedTargetError as exc:
            self.close()
            return Answer(0, "refused_target", str(exc))
        except TimeoutError:
            self.close()
            return Answer(0, "timeout", f"no answer within {self.timeout:g} s")
        except (http.client.HTTPException, ssl.SSLError, UnicodeError) as exc:
            self.close()
            return Answer(0, "bad_response", f"{type(exc).__name__}: {exc}"[:300])
        except OSError as exc:
            self.close()
            return Answer(0, "connect", f"{type(exc).__name__}: {exc}"[:300])
        if truncated or response.will_close:
            self.close()
        status = response.status
        if 200 <= status < 300:
            return Answer(status, "", "", truncated)
        if 300 <= status < 400:
            where = response.getheader("Location", "")[:200]
            return Answer(status, "3xx", f"HTTP {status} (redirects are not followed) to {where!r}", truncated)
        if 400 <= status < 500:
            return Answer(status, "4xx", f"HTTP {status}", truncated)
        if 500 <= status < 600:
            return Answer(status, "5xx", f"HTTP {status}", truncated)
        return Answer(status, "bad_response", f"HTTP {status}", truncated)

    def _drain(self, response: http.client.HTTPResponse, deadline: float) -> bool:
        """Read at most the cap of the body before the deadline; True if there was more."""
        left = self.max_body_bytes
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError
            chunk = response.read(min(_READ_CHUNK, left + 1))
            if not chunk:
                return False
            left -= len(chunk)
            if left < 0:
                return True
