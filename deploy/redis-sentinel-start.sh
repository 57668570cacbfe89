#!/bin/sh
# Starts one sentinel of deploy/compose.sentinel.yaml: writes its configuration
# on the first start only, then runs "$@" (the redis image's entrypoint and
# redis-server) on it in sentinel mode.
#
# Sentinel rewrites that file with what it learns (the current primary after a
# failover, the replicas, the other sentinels), so it lives in the sentinel's
# volume and is never written again: a sentinel restarted after a failover must
# not go back to watching the old primary.
#
# Environment: SENTINEL_MASTER_NAME, SENTINEL_ANNOUNCE_HOSTNAME (this sentinel's
# service name), REDIS_PRIMARY_HOST; optional: REDIS_PRIMARY_PORT (6379),
# SENTINEL_PORT (26379), SENTINEL_DOWN_AFTER_MS (5000),
# SENTINEL_FAILOVER_TIMEOUT_MS (60000), SENTINEL_CONF (/data/sentinel.conf),
# SENTINEL_BIND (every interface of the container).
set -eu
conf=${SENTINEL_CONF:-/data/sentinel.conf}
master=$SENTINEL_MASTER_NAME
if [ ! -s "$conf" ]; then
  cat >"$conf" <<CONF
port ${SENTINEL_PORT:-26379}
${SENTINEL_BIND:+bind $SENTINEL_BIND}
# Service names, resolved when used: container IPs change when containers are re-created.
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel announce-ip $SENTINEL_ANNOUNCE_HOSTNAME
# Quorum 2 of 3: two sentinels must find the primary down before a failover.
sentinel monitor $master $REDIS_PRIMARY_HOST ${REDIS_PRIMARY_PORT:-6379} 2
sentinel down-after-milliseconds $master ${SENTINEL_DOWN_AFTER_MS:-5000}
sentinel failover-timeout $master ${SENTINEL_FAILOVER_TIMEOUT_MS:-60000}
sentinel parallel-syncs $master 1
CONF
fi
exec "$@" "$conf" --sentinel
