"""Running scripts on a Redis Cluster: one ``ScriptRunner`` per node, slots routed, MOVED/ASK/TRYAGAIN followed."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

from redis import Redis
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import AskError, MovedError, RedisClusterException, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from heartbeat.store.scripts import FollowUp, ScriptCall, ScriptRunner, raise_first_error


class ClusterScriptRunner:
    """Runs EVALSHA calls on a Redis Cluster: each on the primary that serves its keys' slot.

    Every script touches one slot (the keys share a hash tag), so a call goes
    to one node; calls for the same node go in one round trip, through a
    ``ScriptRunner`` of that node (the same one wait, the same NOSCRIPT reload:
    a promoted replica has an empty script cache). The slot map is redis-py's
    ``RedisCluster`` (its ``NodesManager``); this follows its answers:
    ``MOVED`` updates the map and resends, ``ASK`` resends once to the
    importing node after ``ASKING``, ``TRYAGAIN`` (a multi-key script while
    its slot migrates) is resent after a short pause. A node that drops the
    connection (killed, failed over) has the map refreshed from the other
    nodes, at most every ``REFRESH_SECONDS``, and the calls resent once; a
    time-out is never resent, as with one server.
    """

    # Rounds of resends: MOVED and ASK take one each; TRYAGAIN pauses, so a
    # slot has about half a second to finish migrating.
    MAX_ROUNDS = 25
    TRYAGAIN_PAUSE_SECONDS = 0.02
    REFRESH_SECONDS = 0.25

    def __init__(self, client: RedisCluster) -> None:
        self.client = client
        self._runners: dict[str, ScriptRunner] = {}
        self._lock = threading.Lock()
        self._refreshed_at = 0.0

    def run(self, calls: list[ScriptCall]) -> list[Any]:
        """Run ``calls`` and return their replies; raises the first script error."""
        return raise_first_error(self.run_replies(calls)[0])

    def run_replies(self, calls: list[ScriptCall], *, follow_up: FollowUp | None = None) -> tuple[list[Any], Any]:
        """As ``ScriptRunner.run_replies``; ``follow_up`` is only for a single call."""
        if follow_up is not None and len(calls) != 1:
            raise ValueError("a follow-up command goes with one call")
        replies: list[Any] = [None] * len(calls)
        followed = None
        pending = [(i, None) for i in range(len(calls))]  # (call, node to ASK) pairs
        connection_failures = 0
        for _ in range(self.MAX_ROUNDS):
            retry: list[tuple[int, ClusterNode | None]] = []
            pause = False
            for (node, asking), indexes in self._by_node(calls, pending).items():
                try:
                    got, followed_here = self._runner(node).run_replies(
                        [calls[i] for i in indexes], follow_up=follow_up, asking=asking
                    )
                except RedisConnectionError:
                    connection_failures += 1
                    self._refresh()
                    if connection_failures > 1:
                        raise
                    retry += [(i, None) for i in indexes]
                    continue
                followed = followed if followed_here is None else followed_here
                for i, reply in zip(indexes, got, strict=True):
                    if isinstance(reply, MovedError):
                        self.client.nodes_manager.move_slot(reply)
                        retry.append((i, None))
                    elif isinstance(reply, AskError):
                        retry.append((i, self._node(reply.host, reply.port)))
                    elif isinstance(reply, TryAgainError):
                        retry.append((i, None))
                        pause = True
                    else:
                        replies[i] = reply
            if not retry:
                return replies, followed
            if pause:
                time.sleep(self.TRYAGAIN_PAUSE_SECONDS)
            pending = retry
        raise RedisConnectionError(f"Redis Cluster kept redirecting {len(pending)} script calls")

    def _by_node(
        self, calls: list[ScriptCall], pending: list[tuple[int, ClusterNode | None]]
    ) -> dict[tuple[ClusterNode, bool], list[int]]:
        groups: dict[tuple[ClusterNode, bool], list[int]] = {}
        for i, ask in pending:
            if ask is not None:
                target = (ask, True)
            else:
                try:
                    node = self.client.nodes_manager.get_node_from_slot(self.client.keyslot(calls[i].keys[0]))
                except RedisClusterException as error:
                    # No node serves the slot (the map is being rebuilt): as a connection failure.
                    raise RedisConnectionError(str(error)) from error
                target = (node, False)
            groups.setdefault(target, []).append(i)
        return groups

    def _node(self, host: str, port: int) -> ClusterNode:
        node = self.client.nodes_manager.get_node(host=host, port=port)
        if node is None:
            self._refresh()
            node = self.client.nodes_manager.get_node(host=host, port=port)
        if node is None:
            raise RedisConnectionError(f"Redis Cluster sent us to {host}:{port}, a node it does not list")
        return node

    def _runner(self, node: ClusterNode) -> ScriptRunner:
        runner = self._runners.get(node.name)
        if runner is None or node.redis_connection is None:
            with self._lock:
                connection = node.redis_connection or self.client.get_redis_connection(node)
                runner = self._runners.get(node.name)
                if runner is None or runner.pool is not connection.connection_pool:
                    runner = ScriptRunner(connection.connection_pool)
                    self._runners[node.name] = runner
        return runner

    def _refresh(self) -> None:
        """Rebuild the slot map from the nodes (a failover, a node gone), not more often than REFRESH_SECONDS.

        Under load every request to a dead node fails at once; one refresh per
        interval per process is enough to find the promoted replica.
        """
        with self._lock:
            if time.monotonic() - self._refreshed_at < self.REFRESH_SECONDS:
                return
            self._refreshed_at = time.monotonic()
        # Every node unreachable for now: the next call tries again.
        with contextlib.suppress(RedisClusterException, RedisConnectionError, RedisTimeoutError):
            self.client.nodes_manager.initialize()


def script_runner_for(client: Redis | RedisCluster) -> ScriptRunner | ClusterScriptRunner:
    """The runner for ``client``'s topology: one server (or Sentinel's primary), or a cluster."""
    if isinstance(client, RedisCluster):
        return ClusterScriptRunner(client)
    return ScriptRunner(client.connection_pool)
