"""heartbeat/store/connection.py: one setting picks the topology; auth and TLS in every mode; staff tools on each."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from io import StringIO
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.core.management import call_command
from django.test import Client
from redis import Redis
from redis.exceptions import AuthenticationError, ConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from devtools.redis_topology import ClusterSet, SentinelSet, TlsFiles, key_slot
from devtools.with_redis import find_redis_server
from heartbeat.limiter.manager import StreamManager
from heartbeat.limiter.outcomes import Outcome
from heartbeat.limiter.scripts import ADMIT
from heartbeat.services import get_stream_manager
from heartbeat.store import connection as redis_connection
from heartbeat.store.connection import RedisSettingsError, RedisTopology, cache_config, parse_topology
from tests.conftest import free_port, monitor_port
from tests.live_state_helpers import reader_of
from tests.tcp_state import LISTEN, sockets_on

# --- Which setting names the topology ----------------------------------------------------


def test_nothing_set_means_the_local_server() -> None:
    topology = parse_topology({}, socket_timeout=1.0)
    assert (topology.mode, topology.url) == ("standalone", "redis://127.0.0.1:6379/0")


def test_sentinels_and_cluster_nodes_are_read_as_addresses() -> None:
    sentinel = parse_topology(
        {"REDIS_SENTINELS": "10.0.0.1:26379, [::1]:26380", "REDIS_SENTINEL_MASTER": "main"}, socket_timeout=1.0
    )
    assert sentinel.mode == "sentinel" and sentinel.sentinel_master == "main"
    assert sentinel.sentinels == (("10.0.0.1", 26379), ("::1", 26380))
    cluster = parse_topology({"REDIS_CLUSTER_NODES": "node-a:7000,node-b:7001"}, socket_timeout=1.0)
    assert cluster.mode == "cluster" and cluster.cluster_nodes == (("node-a", 7000), ("node-b", 7001))


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"REDIS_URL": "redis://x", "REDIS_CLUSTER_NODES": "a:1"}, "only one of REDIS_URL and REDIS_CLUSTER_NODES"),
        ({"REDIS_SENTINELS": "a:1"}, "REDIS_SENTINEL_MASTER must name"),
        ({"REDIS_SENTINELS": "a", "REDIS_SENTINEL_MASTER": "m"}, "host:port pairs"),
        ({"REDIS_CLUSTER_NODES": " , "}, "at least one host:port"),
        ({"REDIS_SENTINEL_MASTER": "m"}, "without REDIS_SENTINELS"),
        ({"REDIS_TLS": "true"}, "use a rediss:// URL"),
        ({"REDIS_CLUSTER_NODES": "a:1", "REDIS_TLS": "sure"}, "true or false"),
    ],
)
def test_a_wrong_topology_is_named_in_one_message(env: dict[str, str], says: str) -> None:
    with pytest.raises(RedisSettingsError, match=says):
        parse_topology(env, socket_timeout=1.0)


def test_a_cluster_keeps_nothing_in_djangos_cache_and_a_sentinel_set_uses_django_redis() -> None:
    cluster = parse_topology({"REDIS_CLUSTER_NODES": "a:1"}, socket_timeout=1.0)
    assert "locmem" in cache_config(cluster, "p")["BACKEND"]
    sentinel = parse_topology(
        {"REDIS_SENTINELS": "a:1", "REDIS_SENTINEL_MASTER": "m", "REDIS_SENTINEL_PASSWORD": "s3cret"},
        socket_timeout=1.0,
    )
    options = cache_config(sentinel, "p")["OPTIONS"]
    assert options["CLIENT_CLASS"] == "django_redis.client.SentinelClient"
    assert options["SENTINEL_KWARGS"]["password"] == "s3cret"
    assert "s3cret" not in sentinel.describe()


# --- Auth in every mode ----------------------------------------------------------------------


def manager_on(topology: RedisTopology, key_prefix: str, settings) -> StreamManager:
    """The service's own StreamManager, built from ``topology`` as from the environment.

    Setting ``CACHES`` drops django-redis' pools (tests/conftest.py): a test that
    changes only a password (or the CA) at the same URL does not get the old pool.
    """
    settings.REDIS_TOPOLOGY = topology
    settings.CACHES = {"default": cache_config(topology, key_prefix)}
    return get_stream_manager()


def test_a_password_protected_server_is_reached_with_redis_password(own_redis, key_prefix: str, settings) -> None:
    server = own_redis("--requirepass", "server-secret-1")
    url = f"redis://127.0.0.1:{server.port}/0"
    manager = manager_on(
        parse_topology({"REDIS_URL": url, "REDIS_PASSWORD": "server-secret-1"}, socket_timeout=1.0),
        key_prefix,
        settings,
    )
    assert manager.admit("alice", "movie", "tv").allowed
    wrong = manager_on(
        parse_topology({"REDIS_URL": url, "REDIS_PASSWORD": "wrong"}, socket_timeout=1.0), key_prefix, settings
    )
    readiness = wrong.check_ready()
    assert not readiness.ready and readiness.reason == "redis_unreachable"
    assert "server-secret-1" not in readiness.detail and "wrong" not in readiness.detail


def test_an_acl_user_reaches_a_sentinel_set_whose_sentinels_have_a_password(
    own_sentinel_set: Callable[..., SentinelSet], key_prefix: str, settings
) -> None:
    sentinels = own_sentinel_set(username="streamlimit", password="data-secret-1", sentinel_password="watch-secret-1")
    env = {
        "REDIS_SENTINELS": sentinels.sentinels,
        "REDIS_SENTINEL_MASTER": sentinels.master_name,
        "REDIS_USERNAME": "streamlimit",
        "REDIS_PASSWORD": "data-secret-1",
        "REDIS_SENTINEL_PASSWORD": "watch-secret-1",
    }
    manager = manager_on(parse_topology(env, socket_timeout=1.0), key_prefix, settings)
    assert manager.check_ready().ready
    assert [manager.admit("alice", "movie", f"s{n}").allowed for n in range(4)] == [True, True, True, False]
    without = manager_on(
        parse_topology({**env, "REDIS_SENTINEL_PASSWORD": ""}, socket_timeout=1.0), key_prefix, settings
    )
    with pytest.raises(ConnectionError):  # the sentinels refuse to say where the primary is
        without.admit("alice", "movie", "s0")


def test_an_acl_user_reaches_a_cluster(own_redis_cluster: Callable[..., ClusterSet], key_prefix: str, settings) -> None:
    cluster = own_redis_cluster(replicas_per_primary=0, username="streamlimit", password="data-secret-2")
    env = {"REDIS_CLUSTER_NODES": cluster.nodes, "REDIS_USERNAME": "streamlimit", "REDIS_PASSWORD": "data-secret-2"}
    manager = manager_on(parse_topology(env, socket_timeout=1.0), key_prefix, settings)
    assert manager.check_ready().ready
    assert [manager.admit(f"user-{n}", "movie", "tv").allowed for n in range(30)] == [True] * 30
    with pytest.raises((AuthenticationError, ConnectionError)):
        redis_connection.cluster_client(parse_topology({**env, "REDIS_PASSWORD": "wrong"}, socket_timeout=1.0))


# --- TLS ---------------------------------------------------------------------------------------


def write_ca_and_server_cert(folder: Path) -> tuple[Path, Path, Path]:
    """A certificate authority and a certificate it signed for 127.0.0.1 (PEM files)."""
    now = datetime.datetime.now(datetime.UTC)

    def cert(subject: str, key, issuer: str, issuer_key, *, ca: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
            )
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = cert("StreamLimit test CA", ca_key, "StreamLimit test CA", ca_key, ca=True)
    server = cert("127.0.0.1", server_key, "StreamLimit test CA", ca_key, ca=False)
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


def test_a_tls_server_is_reached_with_rediss_and_the_ca_file(tmp_path: Path, key_prefix: str, settings) -> None:
    ca, cert, key = write_ca_and_server_cert(tmp_path)
    port = free_port()
    server = subprocess.Popen(
        [
            find_redis_server(),
            *("--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
            *("--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca)),
            *("--tls-auth-clients", "no", "--dir", str(tmp_path)),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(ca)).ping()
                break
            except ConnectionError:
                assert time.monotonic() < deadline, "the TLS redis-server did not answer"
                time.sleep(0.05)
        env = {"REDIS_URL": f"rediss://127.0.0.1:{port}/0", "REDIS_TLS_CA_FILE": str(ca)}
        manager = manager_on(parse_topology(env, socket_timeout=1.0), key_prefix, settings)
        assert manager.check_ready().ready and manager.admit("alice", "movie", "tv").allowed
        # Without our CA, the server's certificate is not trusted: no connection.
        untrusted = manager_on(
            parse_topology({"REDIS_URL": env["REDIS_URL"]}, socket_timeout=1.0), key_prefix, settings
        )
        assert untrusted.check_ready().reason == "redis_unreachable"
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_a_tls_sentinel_set_is_reached_with_redis_tls_and_followed_through_a_failover(
    own_sentinel_set: Callable[..., SentinelSet], tmp_path: Path, key_prefix: str, settings
) -> None:
    ca, cert, key = write_ca_and_server_cert(tmp_path)
    # Data nodes and sentinels listen on TLS ports only, and replicate and gossip over TLS.
    sentinels = own_sentinel_set(tls=TlsFiles(ca, cert, key))
    env = {
        "REDIS_SENTINELS": sentinels.sentinels,
        "REDIS_SENTINEL_MASTER": sentinels.master_name,
        "REDIS_TLS": "true",
        "REDIS_TLS_CA_FILE": str(ca),
    }
    untrusted = manager_on(parse_topology({**env, "REDIS_TLS_CA_FILE": ""}, socket_timeout=1.0), key_prefix, settings)
    assert untrusted.check_ready().reason == "redis_unreachable"
    manager = manager_on(parse_topology(env, socket_timeout=1.0), key_prefix, settings)
    assert manager.check_ready().ready
    assert [manager.admit("alice", "movie", f"s{n}").allowed for n in range(4)] == [True, True, True, False]
    old_primary = sentinels.primary_address()
    with sentinels.client(old_primary) as primary:
        assert primary.execute_command("WAIT", 1, 5000) == 1  # alice's sessions are on the replica
    sentinels.kill_primary()
    new_primary = sentinels.wait_for_failover()
    # The same manager, no restart: its next connections ask the sentinels (over TLS) for the new
    # primary; one call may still meet the dead one's connection.
    deadline = time.monotonic() + 10
    while True:
        try:
            answers = [manager.admit("alice", "movie", f"s{n}").allowed for n in range(4)]
            break
        except ConnectionError:
            assert time.monotonic() < deadline, "no admission through the new primary within 10 s"
            time.sleep(0.1)
    assert answers == [True, True, True, False]
    assert new_primary != old_primary and manager.check_ready().ready
    with sentinels.client(new_primary) as primary:
        assert primary.zcard(manager.keys.user("alice").sessions) == 3


# --- Staff pages and commands on each topology ----------------------------------------------


@pytest.mark.parametrize("kind", ["sentinel", "cluster"])
def test_the_dashboard_and_the_commands_work_on_sentinel_and_cluster(
    kind: str, request: pytest.FixtureRequest, staff_client: Client, key_prefix: str, settings
) -> None:
    if kind == "sentinel":
        shared = request.getfixturevalue("sentinel_set")
        topology = RedisTopology(
            "sentinel", sentinels=tuple(shared.sentinel_addresses), sentinel_master=shared.master_name
        )
    else:
        topology = RedisTopology("cluster", cluster_nodes=tuple(request.getfixturevalue("redis_cluster").startup_nodes))
    manager = manager_on(topology, key_prefix, settings)
    try:
        for n in range(60):
            for screen in range(n % 5):
                manager.admit(f"family-{n:02d}", "movie", f"screen-{screen}", device_name=f"screen {screen}")
        manager.flush_activity()
        pages = [
            "/dashboard/",
            "/dashboard/users/?page=2",
            "/dashboard/users/?filter=at-limit",
            "/dashboard/find/?id=family-1",
            "/dashboard/sharing/",
            "/dashboard/user/?id=family-04",
        ]
        for url in pages:
            assert staff_client.get(url).status_code == 200, url
        assert "family-04" in staff_client.get("/dashboard/find/?id=family-0").content.decode()
        response = staff_client.post("/dashboard/user/evict/", {"id": "family-04", "session": "screen-1"})
        assert response.status_code == 302
        assert [s.session_id for s in reader_of(manager).sessions("family-04")] == ["screen-0", "screen-2"]
        out = StringIO()
        call_command("stats", stdout=out)
        call_command("check_service", stdout=out)
        call_command("live_users", "--limit", "5", stdout=out)
        text = out.getvalue()
        assert "redis: ok" in text and topology.describe() in text and "family-" in text
    finally:
        manager.purge()


def test_a_cluster_that_lost_its_scripts_gets_them_again_on_every_primary(
    own_redis_cluster: Callable[..., ClusterSet], key_prefix: str, settings
) -> None:
    cluster = own_redis_cluster(replicas_per_primary=0)
    manager = manager_on(RedisTopology("cluster", cluster_nodes=tuple(cluster.startup_nodes)), key_prefix, settings)
    users = [f"user-{n}" for n in range(40)]  # on every primary
    assert len({cluster.owner_of_key(manager.keys.user(u).sessions) for u in users}) == 3
    assert all(manager.admit(u, "movie", "tv").allowed for u in users)
    for primary in cluster.primaries():
        cluster.client(primary).script_flush()  # as a restart or a promoted replica would have it
    assert not manager.scripts_loaded()
    assert all(manager.admit(u, "movie", "tv").allowed for u in users)  # NOSCRIPT, loaded, sent again
    manager.flush_activity()  # (the flusher thread may have written part of it already)
    assert reader_of(manager).stats().live_sessions == 40
    for primary in cluster.primaries():
        cluster.client(primary).script_flush()
    readiness = manager.check_ready()
    assert readiness.ready and readiness.scripts_reloaded and manager.scripts_loaded()


def test_a_tls_cluster_is_reached_with_redis_tls_and_the_ca_file(
    own_redis_cluster: Callable[..., ClusterSet], tmp_path: Path, key_prefix: str, settings
) -> None:
    ca, cert, key = write_ca_and_server_cert(tmp_path)
    # Clients, replication and the cluster bus over TLS only.
    cluster = own_redis_cluster(replicas_per_primary=0, tls=TlsFiles(ca, cert, key))
    env = {"REDIS_CLUSTER_NODES": cluster.nodes, "REDIS_TLS": "true", "REDIS_TLS_CA_FILE": str(ca)}
    manager = manager_on(parse_topology(env, socket_timeout=1.0), key_prefix, settings)
    assert manager.check_ready().ready
    assert all(manager.admit(f"user-{n}", "movie", "tv").allowed for n in range(30))
    manager.flush_activity()  # (the flusher thread may have written part of it already)
    assert reader_of(manager).stats().live_sessions == 30
    with pytest.raises(ConnectionError):  # without our CA: not trusted, no connection
        redis_connection.cluster_client(parse_topology({**env, "REDIS_TLS_CA_FILE": ""}, socket_timeout=1.0))


# --- A stalled primary, a stalled or killed sentinel, a slot being migrated ---------------------


def connections_to(port: int) -> int:
    """Connections the kernel holds for a local server port, whatever their state (the listener left out)."""
    return sum(1 for sock in sockets_on(port) if sock.state != LISTEN)


@contextlib.contextmanager
def paused(process: subprocess.Popen) -> Iterator[None]:
    """SIGSTOP a redis-server of the test's own for the block: it accepts connections and answers nothing."""
    process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        process.send_signal(signal.SIGCONT)


def test_on_sentinel_a_timed_out_admission_is_sent_once_and_the_next_heartbeat_finds_it(
    own_sentinel_set: Callable[..., SentinelSet], key_prefix: str, settings
) -> None:
    # The sentinels must not fail over while the primary is paused.
    sentinels = own_sentinel_set(down_after_ms=60_000)
    env = {"REDIS_SENTINELS": sentinels.sentinels, "REDIS_SENTINEL_MASTER": sentinels.master_name}
    manager = manager_on(parse_topology(env, socket_timeout=1.0), key_prefix, settings)
    manager.admit("alice", "movie", "warm-up")  # scripts loaded, connection kept
    primary = sentinels.process_at(sentinels.primary_address())
    with monitor_port(primary.port) as seen:
        # Paused for one and a half socket time-outs: a client that sent the script again on a
        # fresh connection after the time-out would be answered, and the heartbeat would not fail.
        primary.process.send_signal(signal.SIGSTOP)
        resume = threading.Timer(1.5, primary.process.send_signal, (signal.SIGCONT,))
        resume.start()
        try:
            with pytest.raises(RedisTimeoutError):
                manager.admit("alice", "movie", "tv")
        finally:
            resume.join()
            primary.process.send_signal(signal.SIGCONT)
        # Redis ran the script when it woke: it was sent once, never again.
        assert seen().count(ADMIT.sha) == 1
    again = manager.admit("alice", "movie", "tv")
    assert (again.allowed, again.new_session, again.active_sessions) == (True, False, 2)


def test_on_sentinel_a_stalled_then_a_killed_sentinel_is_passed_over(
    own_sentinel_set: Callable[..., SentinelSet], key_prefix: str, settings
) -> None:
    sentinels = own_sentinel_set()
    env = {"REDIS_SENTINELS": sentinels.sentinels, "REDIS_SENTINEL_MASTER": sentinels.master_name}
    topology = parse_topology(env, socket_timeout=1.0)
    first = sentinels.sentinel_processes[0]  # the one asked first
    with paused(first.process):
        # Connections to the stalled sentinel wait in its kernel queue: each one shows there
        # (the other sentinels' connections to it were made before the pause).
        before = connections_to(first.port)
        # A new pool: its first connection asks the sentinels where the primary is.
        manager = manager_on(topology, key_prefix, settings)
        started = time.monotonic()
        assert manager.admit("alice", "movie", "s0").new_session
        waited = time.monotonic() - started
        # The stalled sentinel was asked once (one socket time-out, 1 s), then the next one answered;
        # redis-py's default retry would have asked it again on a new connection each time.
        assert connections_to(first.port) - before == 1
    assert waited < 30  # a bound on the test, not a speed claim
    first.kill()
    manager = manager_on(topology, key_prefix, settings)
    assert [manager.admit("alice", "movie", f"s{n}").allowed for n in range(4)] == [True, True, True, False]


def test_on_a_cluster_an_admission_follows_ask_redirects_until_its_slot_has_migrated(
    own_redis_cluster: Callable[..., ClusterSet], key_prefix: str, settings
) -> None:
    cluster = own_redis_cluster(replicas_per_primary=0)
    manager = manager_on(RedisTopology("cluster", cluster_nodes=tuple(cluster.startup_nodes)), key_prefix, settings)
    user = manager.keys.user("alice")
    assert manager.admit("alice", "movie", "s0").allowed and manager.admit("alice", "movie", "s1").allowed
    slot = key_slot(user.sessions.encode())
    source = cluster.owner_of_key(user.sessions)
    target = next(node for node in cluster.primaries() if node != source)
    source_client, target_client = cluster.client(source), cluster.client(target)
    # As redis-cli --cluster reshard moves a slot, held half-way: MIGRATING on the source,
    # IMPORTING on the target, and the account's keys already on the target.
    target_client.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", cluster.node_id(source))
    source_client.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", cluster.node_id(target))
    keys = source_client.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100)
    assert set(keys) == {user.sessions, user.details}
    host, port = target.rsplit(":", 1)
    source_client.execute_command("MIGRATE", host, port, "", 0, 5000, "KEYS", *keys)

    def asking_calls() -> int:
        return int(target_client.info("commandstats").get("cmdstat_asking", {}).get("calls", 0))

    before = asking_calls()

    def finish_once_asked() -> None:
        # The source answers ASK; the target, asked, answers TRYAGAIN (the script's other keys are
        # in no node yet) until the slot is its own. Redis-cli ends the move with SETSLOT NODE.
        deadline = time.monotonic() + 20
        while asking_calls() == before and time.monotonic() < deadline:
            time.sleep(0.002)
        for node in [target, source, *(n for n in cluster.primaries() if n not in (source, target))]:
            cluster.client(node).execute_command("CLUSTER", "SETSLOT", slot, "NODE", cluster.node_id(target))

    finisher = threading.Thread(target=finish_once_asked)
    finisher.start()
    try:
        third = manager.admit("alice", "movie", "s2")
    finally:
        finisher.join()
    assert asking_calls() > before  # the redirect was followed to the importing node
    assert (third.outcome, third.new_session, third.active_sessions) == (Outcome.ALLOWED, True, 3)
    assert manager.admit("alice", "movie", "s3").outcome is Outcome.LIMIT_REACHED
    assert cluster.owner_of_key(user.sessions) == target and target_client.zcard(user.sessions) == 3
    assert source_client.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0
    assert [s.session_id for s in reader_of(manager).sessions("alice")] == ["s0", "s1", "s2"]
