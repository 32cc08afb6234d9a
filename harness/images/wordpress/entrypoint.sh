#!/bin/sh
# Entrypoint of storeops.local/wordpress (Debian's wordpress, apache2, mod_php 8.4). Before Apache
# starts: when /var/www/html holds no WordPress, copy it there from /usr/src/wordpress; when it has no
# wp-config.php and WORDPRESS_* variables are set, write one from wp-config-docker.php, which reads
# its settings from the environment at every request (so changed variables apply on restart), with
# fresh random keys and salts as defaults for WORDPRESS_AUTH_KEY and the others.
set -eu

log() { printf '%s [storeops-entrypoint] %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }
random() { od -An -N32 -tx1 /dev/urandom | tr -d ' \n'; }
placeholder='put your unique phrase here'

case "$1" in apache2*) ;; *) exec "$@" ;; esac

cd /var/www/html
if [ ! -e index.php ] && [ ! -e wp-includes/version.php ]; then
	if [ -n "$(ls -A)" ]; then log "$PWD is not empty (copying WordPress anyway)"; fi
	log "copying WordPress into $PWD"
	cp -a /usr/src/wordpress/. .
fi

if [ ! -s wp-config.php ] && env | grep -q '^WORDPRESS_'; then
	log "writing wp-config.php"
	config=$(mktemp wp-config.php.XXXXXX)
	cp /usr/src/wordpress/wp-config-docker.php "$config"
	while grep -q "$placeholder" "$config"; do
		sed -i "0,/$placeholder/s//$(random)/" "$config"
	done
	chmod 640 "$config"
	mv "$config" wp-config.php
fi

exec "$@"
