#!/bin/sh
# Entrypoint of storeops.local/mariadb (Debian's mariadb-server): on the first start, initialise an
# empty data directory from MARIADB_* (or MYSQL_*) variables; later, with MARIADB_AUTO_UPGRADE set,
# upgrade the system tables when the data was written by another server version. Then run the server.
# Runs as any user that owns the data directory (the charts use 999, which is mysql here).
set -eu

DATADIR=/var/lib/mysql
SOCKET=/run/mysqld/mysqld.sock

log() { printf '%s [storeops-entrypoint] %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
random() { od -An -N24 -tx1 /dev/urandom | tr -d ' \n'; }
# SQL string literal contents: backslashes and single quotes escaped.
literal() { printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e "s/'/\\\\'/g"; }
# SQL identifier contents (inside backticks): backticks doubled.
identifier() { printf '%s' "$1" | sed -e 's/`/``/g'; }

# Options first ("--foo"): they are the server's.
if [ "${1#-}" != "$1" ]; then set -- mariadbd "$@"; fi
case "$1" in mariadbd | mysqld) ;; *) exec "$@" ;; esac

# MYSQL_* are the older names of the same settings.
root_password=${MARIADB_ROOT_PASSWORD:-${MYSQL_ROOT_PASSWORD:-}}
database=${MARIADB_DATABASE:-${MYSQL_DATABASE:-}}
user=${MARIADB_USER:-${MYSQL_USER:-}}
password=${MARIADB_PASSWORD:-${MYSQL_PASSWORD:-}}
root_host=${MARIADB_ROOT_HOST:-${MYSQL_ROOT_HOST:-%}}
auto_upgrade=${MARIADB_AUTO_UPGRADE:-}

temp_pid=
start_temporary() {  # a server on the socket only: nothing outside the container sees it
	"$@" --skip-networking --socket="$SOCKET" --skip-slave-start --skip-log-bin \
		--loose-innodb-buffer-pool-load-at-startup=0 --loose-innodb-buffer-pool-dump-at-shutdown=0 &
	temp_pid=$!
	tries=60
	until mariadb-admin --socket="$SOCKET" --user=root --skip-password ping >/dev/null 2>&1 ||
		mariadb-admin --socket="$SOCKET" --user=root --password="$root_password" ping >/dev/null 2>&1; do
		kill -0 "$temp_pid" 2>/dev/null || die "the temporary server stopped while starting"
		tries=$((tries - 1))
		[ "$tries" -gt 0 ] || die "the temporary server did not start in 60 s"
		sleep 1
	done
}
stop_temporary() {
	kill -TERM "$temp_pid"
	wait "$temp_pid" || die "the temporary server did not stop cleanly"
}
temp_sql() { mariadb --socket="$SOCKET" --user=root --skip-password --batch --skip-column-names "$@"; }

write_healthcheck_defaults() {  # the account healthcheck.sh logs in with
	umask 077
	printf '[mariadb-client]\nuser=healthcheck\npassword=%s\n' "$1" >"$DATADIR/.my-healthcheck.cnf"
	umask 022
}
healthcheck_accounts() {
	for host in localhost 127.0.0.1 ::1; do
		printf "CREATE OR REPLACE USER 'healthcheck'@'%s' IDENTIFIED BY '%s';\n" "$host" "$1"
		printf "GRANT USAGE ON *.* TO 'healthcheck'@'%s';\n" "$host"
	done
}

if [ ! -d "$DATADIR/mysql" ]; then
	if [ -z "$root_password" ] && [ -z "${MARIADB_ALLOW_EMPTY_ROOT_PASSWORD:-}" ] &&
		[ -z "${MARIADB_RANDOM_ROOT_PASSWORD:-}" ]; then
		die "the data directory is empty: set MARIADB_ROOT_PASSWORD (or MARIADB_ALLOW_EMPTY_ROOT_PASSWORD or MARIADB_RANDOM_ROOT_PASSWORD)"
	fi
	if [ -n "${MARIADB_RANDOM_ROOT_PASSWORD:-}" ] && [ -z "$root_password" ]; then
		root_password=$(random)
		log "GENERATED ROOT PASSWORD: $root_password"
	fi
	log "initialising $DATADIR"
	mariadb-install-db --datadir="$DATADIR" --auth-root-authentication-method=normal --skip-test-db --cross-bootstrap \
		--skip-name-resolve --skip-log-bin >/dev/null
	start_temporary "$@"
	healthcheck=$(random)
	{
		echo "SET @@SESSION.SQL_LOG_BIN=0;"
		echo "DELETE FROM mysql.global_priv WHERE User='';"
		printf "ALTER USER 'root'@'localhost' IDENTIFIED BY '%s';\n" "$(literal "$root_password")"
		if [ "$root_host" != localhost ]; then
			printf "CREATE USER 'root'@'%s' IDENTIFIED BY '%s';\n" "$(literal "$root_host")" "$(literal "$root_password")"
			printf "GRANT ALL ON *.* TO 'root'@'%s' WITH GRANT OPTION;\n" "$(literal "$root_host")"
		fi
		healthcheck_accounts "$healthcheck"
		if [ -n "$database" ]; then
			printf 'CREATE DATABASE IF NOT EXISTS `%s`;\n' "$(identifier "$database")"
		fi
		if [ -n "$user" ] && [ -n "$password" ]; then
			printf "CREATE USER '%s'@'%%' IDENTIFIED BY '%s';\n" "$(literal "$user")" "$(literal "$password")"
			if [ -n "$database" ]; then
				printf "GRANT ALL ON \`%s\`.* TO '%s'@'%%';\n" "$(identifier "$database")" "$(literal "$user")"
			fi
		fi
		echo "FLUSH PRIVILEGES;"
	} | temp_sql
	write_healthcheck_defaults "$healthcheck"
	for script in /docker-entrypoint-initdb.d/*.sql; do
		[ -f "$script" ] || continue
		log "running $script"
		mariadb --socket="$SOCKET" --user=root --password="$root_password" ${database:+"$database"} <"$script"
	done
	stop_temporary
	log "initialised: database '${database:-}' and user '${user:-}'"
elif [ -n "$auto_upgrade" ]; then
	server=$("$1" --version | sed -n 's/.*Ver \([0-9][0-9.]*\)-.*/\1/p')
	written=$(sed -n '1s/^\([0-9][0-9.]*\).*/\1/p' "$DATADIR/mariadb_upgrade_info" "$DATADIR/mysql_upgrade_info" 2>/dev/null | head -n1)
	if [ "$server" != "$written" ] || [ ! -e "$DATADIR/.my-healthcheck.cnf" ]; then
		log "upgrading $DATADIR (written by ${written:-an unknown version}, server $server)"
		start_temporary "$@" --skip-grant-tables
		mariadb-upgrade --socket="$SOCKET" --user=root --skip-password --upgrade-system-tables
		if [ ! -e "$DATADIR/.my-healthcheck.cnf" ]; then
			healthcheck=$(random)
			{ echo "FLUSH PRIVILEGES;"; healthcheck_accounts "$healthcheck"; } | temp_sql
			write_healthcheck_defaults "$healthcheck"
		fi
		stop_temporary
	fi
fi

exec "$@"
