"""devtools/redis_topology.py: real Sentinel sets and Clusters, checked with redis-py's own clients."""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry
from redis.sentinel import Sentinel

from devtools.redis_topology import (
    ClusterSet,
    RedisProcess,
    SentinelSet,
    TopologyError,
    key_in_slot,
    split_address,
    wait_until,
)
from devtools.with_redis import find_redis_server, redis_answers
from tests.conftest import ROOT

TIMEOUTS = {"socket_timeout": 5.0, "socket_connect_timeout": 5.0}
# For the connections that must be refused: redis-py would retry them, with back-off.
NO_RETRY = {"retry": Retry(NoBackoff(), 0)}


def sentinel_client(topology: SentinelSet) -> Sentinel:
    """redis-py's Sentinel client for the set, with its passwords, as the service would make it."""
    return Sentinel(
        topology.sentinel_addresses,
        sentinel_kwargs={"password": topology.sentinel_password, **TIMEOUTS},
        username=topology.username,
        password=topology.password,
        decode_responses=True,
        **TIMEOUTS,
    )


def cluster_client(topology: ClusterSet) -> RedisCluster:
    """redis-py's RedisCluster client, started from the REDIS_CLUSTER_NODES string."""
    nodes = [ClusterNode(*split_address(node)) for node in topology.nodes.split(",")]
    return RedisCluster(
        startup_nodes=nodes, username=topology.username, password=topology.password, decode_responses=True, **TIMEOUTS
    )


@pytest.fixture
def unique() -> str:
    """A key name part of this test's own (the shared topologies hold other tests' keys)."""
    return f"topology-test-{uuid.uuid4().hex[:12]}"


# --- what both share ------------------------------------------------------------------------


def test_a_server_that_cannot_start_is_reported_with_its_log(tmp_path) -> None:
    binary = find_redis_server()
    process = RedisProcess("broken", tmp_path, lambda port: [binary, "--port", str(port), "--no-such-directive", "1"])
    with pytest.raises(TopologyError, match="broken did not start") as raised:
        process.start(timeout=10)
    assert "no-such-directive" in str(raised.value)  # redis-server's own complaint, from its log
    assert not process.alive


def test_a_wait_that_is_never_satisfied_ends_with_what_it_waited_for_and_the_logs() -> None:
    def never() -> bool:
        raise redis.ConnectionError("connection refused")

    with pytest.raises(TopologyError, match=r"the impossible: not reached after 0\.2 s") as raised:
        wait_until("the impossible", never, 0.2, lambda: "  [node-1:1234] last log line")
    assert "connection refused" in str(raised.value) and "[node-1:1234] last log line" in str(raised.value)


def test_key_in_slot_gives_keys_that_redis_puts_in_that_slot(redis_cluster: ClusterSet) -> None:
    server = redis_cluster.client(redis_cluster.primaries()[0])
    for slot in [0, 1, 5460, 5461, 12182, 16383]:
        key = key_in_slot(slot, "name")
        assert key.startswith("{") and key.endswith("}name")
        assert server.cluster("keyslot", key) == slot


# --- Sentinel ---------------------------------------------------------------------------------


def test_the_sentinels_report_the_primary_and_redis_py_finds_it(sentinel_set: SentinelSet) -> None:
    sentinels = sentinel_set.sentinels.split(",")
    assert len(sentinels) == 3 and len(set(sentinels)) == 3
    primary = sentinel_set.primary_address()
    assert sentinel_client(sentinel_set).discover_master(sentinel_set.master_name) == split_address(primary)
    assert sentinel_set.role(primary) == "master"
    [replica] = sentinel_set.replica_addresses()
    assert sentinel_set.role(replica) == "slave"


def test_a_write_through_the_sentinel_client_is_read_on_the_replica(sentinel_set: SentinelSet, unique: str) -> None:
    client = sentinel_client(sentinel_set)
    primary = client.master_for(sentinel_set.master_name)
    primary.set(unique, "written")
    try:
        assert primary.wait(1, 5000) == 1  # replication is asynchronous: wait for the replica's ack
        assert client.slave_for(sentinel_set.master_name).get(unique) == "written"
        [replica] = sentinel_set.replica_addresses()
        assert sentinel_set.client(replica).get(unique) == "written"
    finally:
        primary.delete(unique)


def test_a_shared_sentinel_set_refuses_to_be_killed(sentinel_set: SentinelSet) -> None:
    with pytest.raises(TopologyError, match="shared"):
        sentinel_set.kill_primary()
    assert sentinel_set.role(sentinel_set.primary_address()) == "master"


def test_a_sentinel_set_with_passwords_refuses_clients_without_them(
    own_sentinel_set: Callable[..., SentinelSet],
) -> None:
    topology = own_sentinel_set(username="streamlimit", password="data-pass", sentinel_password="sentinel-pass")
    primary = topology.primary_address()
    host, port = split_address(primary)
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host=host, port=port, password="data-pass", **NO_RETRY).ping()  # the default user is off
    with pytest.raises(redis.AuthenticationError):
        topology.sentinel_client(topology.sentinels.split(",")[0], password=None, **NO_RETRY).ping()
    assert topology.client(primary).ping()
    assert sentinel_client(topology).master_for(topology.master_name).set("acl", "works")


# --- Cluster ----------------------------------------------------------------------------------


@pytest.fixture
def cluster_keys(redis_cluster: ClusterSet, unique: str) -> Iterator[list[str]]:
    """One key name per primary of the shared cluster (in one of its slots); deleted after."""
    keys = []
    for row in redis_cluster.cluster_nodes():
        if row.role == "master" and row.slots:
            keys.append(key_in_slot(min(row.slots), unique))
    yield keys
    client = cluster_client(redis_cluster)
    for key in keys:
        client.delete(key)


def test_the_cluster_covers_every_slot_with_three_primaries_and_three_replicas(redis_cluster: ClusterSet) -> None:
    assert len(set(redis_cluster.nodes.split(","))) == 6
    client = cluster_client(redis_cluster)
    primaries = {node.name for node in client.get_primaries()}
    replicas = {node.name for node in client.get_replicas()}
    assert len(primaries) == 3 and len(replicas) == 3
    assert primaries == set(redis_cluster.primaries()) and replicas == set(redis_cluster.replicas())
    assert primaries | replicas == set(redis_cluster.nodes.split(","))
    for node in redis_cluster.nodes.split(","):
        info = redis_cluster.client(node).cluster("info")
        assert info["cluster_state"] == "ok" and int(info["cluster_slots_assigned"]) == 16384
    served = [slot for row in redis_cluster.cluster_nodes() if row.role == "master" for slot in row.slots]
    assert sorted(served) == list(range(16384))


def test_keys_under_different_hash_tags_are_stored_on_their_own_primaries(
    redis_cluster: ClusterSet, cluster_keys: list[str]
) -> None:
    client = cluster_client(redis_cluster)
    assert len(cluster_keys) == 3
    for key in cluster_keys:
        assert client.set(key, f"value of {key}")
    owners = {redis_cluster.owner_of_key(key): key for key in cluster_keys}
    assert all(owner == client.get_node_from_key(key).name for owner, key in owners.items())
    assert len(owners) == 3
    for owner, key in owners.items():
        assert client.get(key) == f"value of {key}"
        assert redis_cluster.client(owner).get(key) == f"value of {key}"  # on that node itself, no redirection


def test_a_shared_cluster_refuses_to_be_killed_or_resharded(redis_cluster: ClusterSet) -> None:
    first, second = redis_cluster.primaries()[:2]
    with pytest.raises(TopologyError, match="shared"):
        redis_cluster.kill_primary(node=first)
    with pytest.raises(TopologyError, match="shared"):
        redis_cluster.reshard(first, second, 1)
    assert len(redis_cluster.primaries()) == 3


def test_after_a_primary_is_killed_its_replica_serves_its_slots_and_other_keys_stay(
    own_redis_cluster: Callable[..., ClusterSet],
) -> None:
    topology = own_redis_cluster()
    client = cluster_client(topology)
    rows = [row for row in topology.cluster_nodes() if row.role == "master"]
    keys = {row.id: key_in_slot(min(row.slots), "kept") for row in rows}
    for key in keys.values():
        client.set(key, key)
    victim = rows[0]
    [victim_replica] = [row.address for row in topology.cluster_nodes() if row.primary_id == victim.id]

    killed = topology.kill_primary(node=victim.address)
    promoted = topology.wait_for_failover(timeout=30)

    assert killed == victim.address and promoted == victim_replica
    assert topology.slots_of(promoted) == victim.slots
    after = cluster_client(topology)
    for primary_id, key in keys.items():
        if primary_id != victim.id:
            assert after.get(key) == key
    victim_key = keys[victim.id]
    assert after.set(victim_key, "written after the failover")
    assert topology.client(promoted).get(victim_key) == "written after the failover"
    # Back from the dead with its nodes.conf, the old primary is now the replica.
    assert topology.restart_killed(timeout=30) == killed
    assert killed in topology.replicas() and sorted(topology.primaries()) == sorted(
        [promoted, *(row.address for row in rows[1:])]
    )


def _ignore_sigint() -> None:
    # As for a background job of a non-interactive shell (`make test &` in a script).
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_the_command_line_runs_a_cluster_until_told_to_stop_and_says_what_to_export(stop_signal) -> None:
    # Started with SIGINT ignored: the command must still stop on SIGINT (Ctrl-C) and on SIGTERM.
    command = subprocess.Popen(
        [sys.executable, "-m", "devtools.redis_topology", "cluster"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_ignore_sigint,
    )
    nodes = ""
    try:
        lines = []
        while not lines or "Ctrl-C" not in lines[-1]:
            line = command.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
        exports = next(line for line in lines if "make run" in line).split()
        nodes = dict(item.split("=", 1) for item in exports if "=" in item)["REDIS_CLUSTER_NODES"]
        host, port = split_address(nodes.split(",")[0])
        client = RedisCluster(host=host, port=port)
        assert client.ping() and len([line for line in lines if "kill -9" in line]) == 3
        client.close()
        command.send_signal(stop_signal)
        assert command.wait(timeout=30) == 0
    finally:
        if command.poll() is None:  # it did not stop: end it and the nodes (they die with it) anyway
            command.kill()
            command.wait(timeout=10)
        command.stdout.close()
    assert not any(redis_answers(*split_address(node)) for node in nodes.split(","))
