#!/bin/sh
# First start: initdb, the application role and the four databases of the
# deployment. Later starts reuse the volume. Then run postgres in the foreground.
set -eu
: "${POSTGRES_USER:=bizosaas}"
: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is not set}"
: "${POSTGRES_DATABASES:=bizosaas_staging saleor_staging temporal_staging vault_staging}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pwfile=$(mktemp)
  printf '%s' "$POSTGRES_PASSWORD" > "$pwfile"
  initdb -D "$PGDATA" -U "$POSTGRES_USER" --encoding=UTF8 --locale=C.UTF-8 --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f "$pwfile"
  echo "host all all 0.0.0.0/0 scram-sha-256" >> "$PGDATA/pg_hba.conf"
  cat >> "$PGDATA/postgresql.conf" <<CONF
listen_addresses = '*'
max_connections = ${POSTGRES_MAX_CONNECTIONS:-100}
shared_buffers = 64MB
log_min_messages = warning
CONF
  pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
  for db in $POSTGRES_DATABASES; do
    psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d postgres -qc "CREATE DATABASE $db OWNER $POSTGRES_USER" 
  done
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  echo "database system initialised: $POSTGRES_DATABASES"
fi
exec postgres -D "$PGDATA"
