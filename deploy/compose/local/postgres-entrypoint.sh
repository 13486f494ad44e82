#!/bin/bash
# First start: initdb with POSTGRES_USER as superuser (password auth over TCP), then
# POSTGRES_DB. Later starts: the data directory is reused as it is.
set -euo pipefail
if [[ ! -s "$PGDATA/PG_VERSION" ]]; then
  : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}"
  user=${POSTGRES_USER:-postgres}
  db=${POSTGRES_DB:-$user}
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  initdb -D "$PGDATA" -U "$user" --pwfile="$pwfile" -E UTF8 \
    --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f "$pwfile"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  if [[ $db != postgres ]]; then
    pg_ctl -D "$PGDATA" -w -s -o "-c listen_addresses='' -c unix_socket_directories=/tmp" start
    createdb -h /tmp -U "$user" -O "$user" "$db"
    pg_ctl -D "$PGDATA" -w -s -m fast stop
  fi
fi
if [[ ${1:-} == postgres ]]; then
  shift
  exec postgres -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories=/tmp "$@"
fi
exec "$@"
