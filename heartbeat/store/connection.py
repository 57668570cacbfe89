"""The one place that turns the Redis settings into a client, for every topology.

Three topologies, chosen by which setting is given (exactly one):

- ``REDIS_URL``: one Redis server (the default, ``redis://127.0.0.1:6379/0``);
- ``REDIS_SENTINELS`` with ``REDIS_SENTINEL_MASTER``: the primary that Redis
  Sentinel names, through django-redis' Sentinel client (redis-py's
  ``SentinelConnectionPool``: every new connection asks a sentinel where the
  primary is, so a failover needs no restart);
- ``REDIS_CLUSTER_NODES``: a Redis Cluster, through redis-py's ``RedisCluster``
  (django-redis has no cluster client).

The StreamManager, the dashboard's reads and the commands all take their
client from ``heartbeat.services.redis_client()``; scripts run through ``heartbeat.store.scripts``'s runner
for the same topology (``script_runner_for``).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException
from redis.retry import Retry


class RedisSettingsError(ValueError):
    """A Redis setting is wrong; the message names the variable(s)."""


@dataclass(frozen=True)
class RedisTopology:
    """Where Redis is and how to reach it, as the settings say."""

    mode: str
    url: str = ""
    sentinels: tuple[tuple[str, int], ...] = ()
    sentinel_master: str = ""
    cluster_nodes: tuple[tuple[str, int], ...] = ()
    username: str = ""
    password: str = ""
    sentinel_password: str = ""
    tls: bool = False
    tls_ca_file: str = ""
    socket_timeout: float = 1.0

    def describe(self) -> str:
        """A line for logs and ``check_service``: the topology and addresses, never a password."""
        if self.mode == "sentinel":
            where = ",".join(f"{h}:{p}" for h, p in self.sentinels)
            return f"sentinel master {self.sentinel_master!r} via {where}"
        if self.mode == "cluster":
            return "cluster via " + ",".join(f"{h}:{p}" for h, p in self.cluster_nodes)
        return "one server"


def parse_addresses(name: str, value: str) -> tuple[tuple[str, int], ...]:
    """``host:port,host:port`` (IPv6 as ``[::1]:port``) as pairs; raises naming ``name``."""
    found = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise RedisSettingsError(f"{name} must be host:port pairs separated by commas, got {item!r}")
        found.append((host, int(port)))
    if not found:
        raise RedisSettingsError(f"{name} must name at least one host:port")
    return tuple(found)


def parse_topology(env: Mapping[str, str], *, socket_timeout: float) -> RedisTopology:
    """The topology from the environment: exactly one of REDIS_URL, REDIS_SENTINELS, REDIS_CLUSTER_NODES."""
    given = [name for name in ("REDIS_URL", "REDIS_SENTINELS", "REDIS_CLUSTER_NODES") if env.get(name, "").strip()]
    if len(given) > 1:
        raise RedisSettingsError(f"set only one of {' and '.join(given)}: each names a whole Redis topology")
    tls = _flag(env, "REDIS_TLS")
    common: dict[str, Any] = {
        "username": env.get("REDIS_USERNAME", ""),
        "password": env.get("REDIS_PASSWORD", ""),
        "sentinel_password": env.get("REDIS_SENTINEL_PASSWORD", ""),
        "tls_ca_file": env.get("REDIS_TLS_CA_FILE", "").strip(),
        "socket_timeout": socket_timeout,
    }
    if common["tls_ca_file"] and not Path(common["tls_ca_file"]).is_file():
        raise RedisSettingsError(f"REDIS_TLS_CA_FILE is not a readable file: {common['tls_ca_file']!r}")
    master = env.get("REDIS_SENTINEL_MASTER", "").strip()
    if given == ["REDIS_SENTINELS"]:
        sentinels = parse_addresses("REDIS_SENTINELS", env["REDIS_SENTINELS"])
        if not master:
            raise RedisSettingsError("REDIS_SENTINEL_MASTER must name the primary that REDIS_SENTINELS watch")
        return RedisTopology("sentinel", sentinels=sentinels, sentinel_master=master, tls=tls, **common)
    if master:
        raise RedisSettingsError("REDIS_SENTINEL_MASTER is set without REDIS_SENTINELS")
    if common["sentinel_password"]:
        raise RedisSettingsError("REDIS_SENTINEL_PASSWORD is set without REDIS_SENTINELS")
    if given == ["REDIS_CLUSTER_NODES"]:
        nodes = parse_addresses("REDIS_CLUSTER_NODES", env["REDIS_CLUSTER_NODES"])
        return RedisTopology("cluster", cluster_nodes=nodes, tls=tls, **common)
    url = env.get("REDIS_URL", "").strip() or "redis://127.0.0.1:6379/0"
    if not url.startswith(("redis://", "rediss://", "unix://")):
        # Only the scheme is repeated: the rest may hold a password.
        raise RedisSettingsError(
            f"REDIS_URL must start with redis://, rediss:// or unix://, got one starting {url.split(':', 1)[0]!r}"
        )
    if tls and not url.startswith("rediss://"):
        raise RedisSettingsError("REDIS_TLS=true is for REDIS_SENTINELS and REDIS_CLUSTER_NODES: use a rediss:// URL")
    return RedisTopology("standalone", url=url, tls=url.startswith("rediss://"), **common)


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise RedisSettingsError(f"{name} must be true or false, got {raw!r}")


def _no_retry() -> Retry:
    # One wait of at most the socket time-out per call: redis-py must not send
    # a timed-out command again (heartbeat.store.scripts explains why).
    return Retry(NoBackoff(), 0)


def _tls_kwargs(topology: RedisTopology) -> dict[str, Any]:
    if not topology.tls:
        return {}
    kwargs: dict[str, Any] = {"ssl": True}
    if topology.tls_ca_file:
        kwargs["ssl_ca_certs"] = topology.tls_ca_file
    return kwargs


def _auth_kwargs(topology: RedisTopology) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if topology.username:
        kwargs["username"] = topology.username
    if topology.password:
        kwargs["password"] = topology.password
    return kwargs


def cache_config(topology: RedisTopology, key_prefix: str) -> dict[str, Any]:
    """Django's ``CACHES["default"]``: django-redis for one server and Sentinel, a local cache for a cluster.

    The service keeps nothing in Django's cache; django-redis is there for its
    connection pool (``get_redis_connection``). A cluster's client is built by
    ``redis_client()`` instead.
    """
    if topology.mode == "cluster":
        return {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "streamlimit"}
    pool_kwargs: dict[str, Any] = {"health_check_interval": 30, "retry": _no_retry()}
    options: dict[str, Any] = {
        "CLIENT_CLASS": "django_redis.client.DefaultClient",
        # A limiter must see Redis errors, never treat them as cache misses.
        "IGNORE_EXCEPTIONS": False,
        "SOCKET_CONNECT_TIMEOUT": topology.socket_timeout,
        "SOCKET_TIMEOUT": topology.socket_timeout,
    }
    location = topology.url
    pool_kwargs.update(_auth_kwargs(topology))
    if topology.mode == "standalone":
        if topology.tls_ca_file:
            pool_kwargs["ssl_ca_certs"] = topology.tls_ca_file
    else:
        # Not rediss://: from a rediss:// URL redis-py would pick a plain SSL
        # connection class over the Sentinel-managed one that follows failovers.
        location = f"redis://{topology.sentinel_master}/0"
        pool_kwargs.update(_tls_kwargs(topology))
        sentinel_kwargs: dict[str, Any] = {
            "socket_timeout": topology.socket_timeout,
            "socket_connect_timeout": topology.socket_timeout,
            # A sentinel that fails is passed over for the next one, at once.
            "retry": _no_retry(),
            **_tls_kwargs(topology),
        }
        if topology.sentinel_password:
            sentinel_kwargs["password"] = topology.sentinel_password
        options.update(
            CLIENT_CLASS="django_redis.client.SentinelClient",
            CONNECTION_FACTORY="django_redis.pool.SentinelConnectionFactory",
            SENTINELS=list(topology.sentinels),
            SENTINEL_KWARGS=sentinel_kwargs,
        )
    options["CONNECTION_POOL_KWARGS"] = pool_kwargs
    return {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": location,
        "KEY_PREFIX": key_prefix + ":cache",
        "OPTIONS": options,
    }


class ClusterUnavailableError(RedisConnectionError):
    """The cluster could not be reached or mapped (redis-py's ``RedisClusterException``), as a Redis error."""


class _ClusterPipelineErrors:
    """A cluster pipeline whose ``execute`` raises ``ClusterUnavailableError`` for ``RedisClusterException``.

    A wrapper, not a subclass: ``RedisCluster.pipeline`` builds its own class
    with many arguments; every other attribute is the pipeline's own.
    """

    def __init__(self, pipe: ClusterPipeline) -> None:
        self._pipe = pipe

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self._pipe.execute(*args, **kwargs)
        except RedisClusterException as error:
            raise ClusterUnavailableError(str(error)) from error

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipe, name)

    def __enter__(self) -> _ClusterPipelineErrors:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pipe.reset()


class StreamLimitCluster(RedisCluster):
    """redis-py's ``RedisCluster`` whose failures are all ``RedisError``s.

    redis-py raises ``RedisClusterException`` (not a ``RedisError``) when no
    node can be reached or a slot has no node: the views, probes and staff
    pages, which answer every ``RedisError`` cleanly (a JSON 500, a 503, an
    error page), see it as the connection error it is.
    """

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().execute_command(*args, **kwargs)
        except RedisClusterException as error:
            raise ClusterUnavailableError(str(error)) from error

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> Any:
        return _ClusterPipelineErrors(super().pipeline(transaction, shard_hint))


@functools.cache
def cluster_client(topology: RedisTopology) -> RedisCluster:
    """The ``RedisCluster`` client for ``REDIS_CLUSTER_NODES`` (one per process and topology).

    Raises ``ClusterUnavailableError`` when no node answers (a wrong password too).
    """
    try:
        return _connect_cluster(topology)
    except RedisClusterException as error:
        raise ClusterUnavailableError(str(error)) from error


def _connect_cluster(topology: RedisTopology) -> RedisCluster:
    return StreamLimitCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in topology.cluster_nodes],
        socket_timeout=topology.socket_timeout,
        socket_connect_timeout=topology.socket_timeout,
        # One retry lets a read find a failed-over slot's new primary; scripts
        # go through heartbeat.store.cluster_scripts.ClusterScriptRunner, which has its own rule.
        retry=Retry(NoBackoff(), 1),
        **_auth_kwargs(topology),
        **_tls_kwargs(topology),
    )
