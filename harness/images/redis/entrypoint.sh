#!/bin/sh
# Entrypoint of storeops.local/redis (Debian's redis-server): options alone ("--save ''") or a
# configuration file are given to redis-server; anything else runs as is.
set -eu
case "${1:-}" in
"" | -* | *.conf) set -- redis-server "$@" ;;
esac
# What redis-server writes (dumps, append-only files) is for its user only.
if [ "$1" = redis-server ] && [ "$(umask)" = 0022 ]; then umask 0077; fi
exec "$@"
