#!/bin/sh
# Runs migrations first when MIGRATE_ON_START=1 (the default for a single
# container); with several replicas, run them once instead (compose.yaml's
# `migrate` service) and set MIGRATE_ON_START=0 on the replicas.
set -e
if [ "${MIGRATE_ON_START:-1}" = "1" ]; then
  python manage.py migrate --noinput
fi
exec "$@"
