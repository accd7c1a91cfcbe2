#!/bin/sh
# The password comes from the environment so it never shows in `docker inspect` Cmd.
set -eu
conf=$(mktemp)
cat > "$conf" <<CONF
bind 0.0.0.0
port 6379
protected-mode no
databases 16
maxmemory ${REDIS_MAXMEMORY:-256mb}
maxmemory-policy allkeys-lru
save ""
appendonly no
CONF
if [ -n "${REDIS_PASSWORD:-}" ]; then echo "requirepass $REDIS_PASSWORD" >> "$conf"; fi
exec redis-server "$conf"
