#!/bin/sh
# healthcheck.sh of storeops.local/mariadb: exit 0 when every test named passes.
#   --connect                    the server accepts TCP connections (the first start's temporary
#                                server listens on its socket only, so this fails until it is done)
#   --innodb_initialized         InnoDB is available
#   --innodb_buffer_pool_loaded  the buffer pool load at startup has finished
# It logs in as healthcheck@localhost with the password the entrypoint wrote to the data directory.
set -u
defaults=/var/lib/mysql/.my-healthcheck.cnf
if [ ! -r "$defaults" ]; then
	echo "healthcheck.sh: $defaults is missing (the first start has not finished)" >&2
	exit 1
fi
query() {
	mariadb --defaults-extra-file="$defaults" --protocol=tcp --host=127.0.0.1 --port="${MARIADB_PORT:-3306}" \
		--connect-timeout=3 --batch --skip-column-names -e "$1"
}
[ $# -gt 0 ] || set -- --connect
for test in "$@"; do
	case "$test" in
	--connect) answer=$(query 'SELECT 1') ;;
	--innodb_initialized)
		answer=$(query "SELECT 1 FROM information_schema.ENGINES WHERE ENGINE='InnoDB' AND SUPPORT IN ('YES','DEFAULT','ENABLED')") ;;
	--innodb_buffer_pool_loaded)
		answer=$(query "SELECT 1 FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME='INNODB_BUFFER_POOL_LOAD_STATUS' AND VARIABLE_VALUE LIKE 'Buffer pool(s) load completed%'") ;;
	*)
		echo "healthcheck.sh: unknown test $test" >&2
		exit 1 ;;
	esac
	if [ "$answer" != 1 ]; then
		echo "healthcheck.sh: $test failed" >&2
		exit 1
	fi
done
exit 0
