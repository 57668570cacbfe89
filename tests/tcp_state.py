"""What the kernel holds on a loopback TCP port (/proc/net/tcp, Linux): for waits on a condition, not on time.

For a listening socket ``rx_queue`` is its accept queue (connections not yet
accepted by the server); for a connected one, the bytes received and not yet
read by the process that owns it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

LISTEN, ESTABLISHED = "0A", "01"


@dataclass(frozen=True)
class TcpSocket:
    """One IPv4 socket bound to the port asked for: its state (hex, as the kernel writes it) and queues."""

    state: str
    tx_queue: int
    rx_queue: int


def sockets_on(port: int) -> list[TcpSocket]:
    """Every IPv4 socket whose local port is ``port`` (the server's side of each connection, and its listener)."""
    found = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].rsplit(":", 1)[1], 16)
        if local_port == port:
            tx, rx = (int(part, 16) for part in fields[4].split(":"))
            found.append(TcpSocket(fields[3], tx, rx))
    return found


def wait_for(what: str, check: Callable[[], bool], timeout: float = 30) -> None:
    """Poll ``check`` until it is true; fail with ``what`` after ``timeout`` seconds (a bound, never a pace)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached after {timeout} s: {what}")
        time.sleep(0.02)
