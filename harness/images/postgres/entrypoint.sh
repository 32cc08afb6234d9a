#!/bin/sh
# Entrypoint of storeops.local/postgres (Debian's postgresql-17): on the first start, initdb into an
# empty PGDATA with POSTGRES_USER as superuser (password POSTGRES_PASSWORD, checked with
# POSTGRES_HOST_AUTH_METHOD, scram-sha-256 by default, for connections over TCP) and create
# POSTGRES_DB. Then run the server. Runs as the user owning PGDATA (the charts use 999, postgres here).
set -eu

log() { printf '%s [storeops-entrypoint] %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [ "${1#-}" != "$1" ]; then set -- postgres "$@"; fi
[ "$1" = postgres ] || exec "$@"

: "${PGDATA:=/var/lib/postgresql/data}"
export PGDATA
user=${POSTGRES_USER:-postgres}
database=${POSTGRES_DB:-$user}
auth=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
	if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$auth" != trust ]; then
		die "PGDATA is empty: set POSTGRES_PASSWORD (or POSTGRES_HOST_AUTH_METHOD=trust)"
	fi
	mkdir -p "$PGDATA"
	chmod 700 "$PGDATA"
	log "initialising $PGDATA"
	passwords=$(mktemp)
	trap 'rm -f "$passwords"' EXIT
	printf '%s\n' "${POSTGRES_PASSWORD:-}" >"$passwords"
	# shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of options
	initdb --username="$user" --pwfile="$passwords" --encoding=UTF8 --locale=C.UTF-8 ${POSTGRES_INITDB_ARGS:-} >/dev/null
	rm -f "$passwords"
	printf '\n# storeops-entrypoint\nhost all all all %s\n' "$auth" >>"$PGDATA/pg_hba.conf"
	printf "\nlisten_addresses = '*'\n" >>"$PGDATA/postgresql.conf"
	# A temporary server on the socket only: nothing outside the container sees it.
	pg_ctl --silent --wait --options="-c listen_addresses=''" start >/dev/null
	if [ "$database" != postgres ]; then
		echo 'CREATE DATABASE :"database";' |
			psql --quiet --no-psqlrc -v ON_ERROR_STOP=1 --username="$user" --dbname=postgres -v database="$database"
	fi
	for script in /docker-entrypoint-initdb.d/*; do
		case "$script" in
		*.sql) log "running $script"; psql --quiet --no-psqlrc -v ON_ERROR_STOP=1 --username="$user" --dbname="$database" -f "$script" ;;
		*.sh) log "running $script"; sh "$script" ;;
		esac
	done
	pg_ctl --silent --wait --mode=fast stop >/dev/null
	log "initialised: database '$database', user '$user'"
fi

exec "$@"
