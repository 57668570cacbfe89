"""Fixtures with real Redis topologies (devtools/redis_topology.py): a Sentinel set and a Cluster on loopback.

``sentinel_set`` and ``redis_cluster`` start once per test session, on first
use, and are shared: they refuse kill_primary, restart_killed and reshard, and
tests keep to keys of their own. A test that kills or reshards starts a
topology of its own with ``own_sentinel_set(...)`` or ``own_redis_cluster(...)``
(keyword arguments as SentinelSet's and ClusterSet's: password, username,
sentinel_password...); those are stopped after the test.

Under pytest-xdist each worker is a session of its own: a worker that runs a
test on a shared topology starts its own (on first use), so those tests spread
over every worker instead of queueing on one, and each worker draws node ports
from a slice of the range of its own, so that two workers never race for one.

Registered by ``pytest_plugins`` in tests/conftest.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from devtools import redis_topology
from devtools.redis_topology import ClusterSet, SentinelSet, TopologyError


def pytest_configure(config: pytest.Config) -> None:
    """In an xdist worker: node ports from this worker's own slice of PORT_RANGE."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker.startswith("gw"):
        count = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
        low, high = redis_topology.PORT_RANGE
        size = (high - low) // count
        start = low + size * int(worker.removeprefix("gw"))
        redis_topology.PORT_RANGE = (start, start + size)


def _started(topology: SentinelSet | ClusterSet) -> None:
    try:
        topology.start()
    except TopologyError:
        topology.stop()
        raise


def _build(kind: type[SentinelSet] | type[ClusterSet], **options: object) -> SentinelSet | ClusterSet:
    try:
        return kind(**options)
    except TopologyError as error:  # no redis-server or redis-cli binary: say how to get one
        pytest.fail(str(error))


# A shared topology never fails over on purpose: Redis' production defaults for detecting a dead
# primary, so that a busy machine (a node answering late) cannot set off a failover mid-test.
SHARED_DETECTION = {SentinelSet: {"down_after_ms": 30000}, ClusterSet: {"node_timeout_ms": 15000}}


def _shared(kind: type[SentinelSet] | type[ClusterSet]) -> Iterator[SentinelSet | ClusterSet]:
    topology = _build(kind, allow_destructive=False, **SHARED_DETECTION[kind])
    _started(topology)
    yield topology
    topology.stop()


def _own(kind: type[SentinelSet] | type[ClusterSet]) -> Iterator[Callable[..., SentinelSet | ClusterSet]]:
    started: list[SentinelSet | ClusterSet] = []

    def start(**options: object) -> SentinelSet | ClusterSet:
        topology = _build(kind, **options)
        started.append(topology)
        _started(topology)
        return topology

    yield start
    for topology in started:
        topology.stop()


@pytest.fixture(scope="session")
def sentinel_set() -> Iterator[SentinelSet]:
    """A Sentinel set shared by the session (each xdist worker's own): a primary, a replica, three sentinels.

    Its master is ``mymaster``.
    """
    yield from _shared(SentinelSet)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[ClusterSet]:
    """A Redis Cluster shared by the session (each xdist worker's own): three primaries, three replicas."""
    yield from _shared(ClusterSet)


@pytest.fixture
def own_sentinel_set() -> Iterator[Callable[..., SentinelSet]]:
    """Start Sentinel sets of this test's own (SentinelSet's keyword arguments); all stopped after."""
    yield from _own(SentinelSet)


@pytest.fixture
def own_redis_cluster() -> Iterator[Callable[..., ClusterSet]]:
    """Start Redis Clusters of this test's own (ClusterSet's keyword arguments); all stopped after."""
    yield from _own(ClusterSet)
