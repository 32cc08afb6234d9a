#!/bin/sh
# storeops WooCommerce: bring the content volume's WordPress core up to the image's, before WordPress
# serves (the wordpress Deployment's init container, with the WordPress image itself).
#
#   core-upgrade.sh [IMAGE_CORE [VOLUME]]      (defaults: /usr/src/wordpress /var/www/html)
#
# The image's entrypoint copies WordPress into the volume on the first start only, so a newer image
# alone never reaches an existing store. Here, by the `$wp_version` of each wp-includes/version.php:
#
#   no WordPress in the volume   nothing (the first start copies it)
#   the image's is newer         the core files are replaced, everything but wp-content/, wp-config.php
#                                and .htaccess (the store's plugins, themes, uploads, settings and
#                                rewrite rules); the database is upgraded by the setup Job afterwards
#   the same                     nothing
#   the volume's is newer        exit 1 with the reason: WordPress has no downgrade (its database may
#                                already be upgraded); use an image as new, or restore a backup
#
# An interruption never leaves a core that is half one version and half the other: the image's core
# is copied into a staging folder on the volume (.storeops-core.partial), which becomes
# .storeops-core once complete; then each entry is moved into place with rename(2) (a folder: the
# old one moved aside first), wp-includes/ (which holds version.php) last. A run that finds
# .storeops-core finishes that swap before anything else; a .partial copy is started again.
# The files are written by the container's user (the pod runs as www-data, uid 33), as WordPress's are.
set -eu
# No file name globbing: every name comes from a folder listing.
set -f

src=${1:-/usr/src/wordpress}
dst=${2:-/var/www/html}
staging=$dst/.storeops-core
partial=$staging.partial
previous=$staging.previous
#: Never replaced: the store's own content, configuration and rewrite rules.
KEEP='wp-content wp-config.php .htaccess'

log() { printf '%s [core-upgrade] %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"; }

fail() {
	log "failed: $*" >&2
	# The reason as the container's termination message (`kubectl describe pod`, the Pod's status).
	if [ -w /dev/termination-log ]; then printf 'core upgrade failed: %s' "$*" >/dev/termination-log || true; fi
	exit 1
}

# The `$wp_version = '6.8.3';` of a WordPress folder; nothing when it has none.
version_of() {
	[ -f "$1/wp-includes/version.php" ] || return 0
	sed -n "s/^[[:space:]]*\$wp_version[[:space:]]*=[[:space:]]*['\"]\([^'\"]*\)['\"].*/\1/p" \
		"$1/wp-includes/version.php" | head -n 1
}

# Compare two WordPress versions (6.8.3, 6.9, 6.9-RC1, 7.0-beta2): prints <, = or >. Missing parts
# count as 0 (6.9 = 6.9.0); a pre-release comes before its release, alpha < beta < RC.
compare() {
	a=${1%%-*} b=${2%%-*}
	while [ -n "$a$b" ]; do
		x=${a%%.*} y=${b%%.*}
		case $a in *.*) a=${a#*.} ;; *) a= ;; esac
		case $b in *.*) b=${b#*.} ;; *) b= ;; esac
		for part in "${x:-0}" "${y:-0}"; do
			case $part in *[!0-9]*) fail "cannot compare WordPress versions '$1' and '$2'" ;; esac
		done
		if [ "${x:-0}" -lt "${y:-0}" ]; then echo '<' && return; fi
		if [ "${x:-0}" -gt "${y:-0}" ]; then echo '>' && return; fi
	done
	a='' b=''
	case $1 in *-*) a=$(printf '%s' "${1#*-}" | tr '[:upper:]' '[:lower:]') ;; esac
	case $2 in *-*) b=$(printf '%s' "${2#*-}" | tr '[:upper:]' '[:lower:]') ;; esac
	if [ "$a" = "$b" ]; then echo '='
	elif [ -z "$a" ]; then echo '>'
	elif [ -z "$b" ]; then echo '<'
	elif [ "$(printf '%s\n%s\n' "$a" "$b" | LC_ALL=C sort | head -n 1)" = "$a" ]; then echo '<'
	else echo '>'
	fi
}

# (POSIX sh has no local variables: each function names its own.)
kept() {
	for kept_name in $KEEP; do [ "$1" = "$kept_name" ] && return 0; done
	return 1
}

# Every entry of a folder, dot files too, one per line (core file names have no newline).
entries() { ls -A "$1"; }

# Move the complete staged core into place, wp-includes/ last; what is still staged is still to move
# (so a staging folder without wp-includes/ has had everything moved out of it).
install_staged() {
	if [ -e "$staging/wp-includes" ]; then
		staged=$(version_of "$staging")
		[ -n "$staged" ] || fail "$staging holds no WordPress version (remove it to copy the core again)"
		log "moving WordPress $staged into $dst"
	fi
	mkdir -p "$previous"
	for entry in $(entries "$staging" | grep -vx wp-includes) wp-includes; do
		[ -e "$staging/$entry" ] || [ -L "$staging/$entry" ] || continue
		if [ -d "$staging/$entry" ] && [ ! -L "$staging/$entry" ]; then
			if [ -e "$dst/$entry" ] || [ -L "$dst/$entry" ]; then
				rm -rf "${previous:?}/$entry"
				mv "$dst/$entry" "$previous/$entry"
			fi
			mv "$staging/$entry" "$dst/$entry"
		else
			# A file over a file: one rename, never a missing or half-written file.
			mv -f "$staging/$entry" "$dst/$entry"
		fi
	done
	rmdir "$staging"
	rm -rf "$previous"
	sync
}

image=$(version_of "$src")
[ -n "$image" ] || fail "the image has no WordPress in $src (no \$wp_version in wp-includes/version.php)"

if [ -d "$staging" ]; then
	log "finishing an interrupted core upgrade"
	install_staged
fi
rm -rf "$partial" "$previous"

volume=$(version_of "$dst")
if [ -z "$volume" ]; then
	log "no WordPress in $dst yet: the first start copies WordPress $image"
	exit 0
fi

order=$(compare "$image" "$volume")
case $order in
'=')
	log "WordPress core $volume, as in the image: nothing to do"
	exit 0
	;;
'>') ;;
*)
	fail "the volume has WordPress $volume, newer than the image's $image: WordPress cannot go back" \
		"to an older core (its database may be upgraded already); run an image of WordPress $volume or" \
		"newer, or restore the backup taken before the upgrade"
	;;
esac

log "upgrading WordPress core from $volume to $image (wp-content, wp-config.php and .htaccess kept)"
mkdir "$partial"
for name in $(entries "$src"); do
	kept "$name" && continue
	cp -a "$src/$name" "$partial/"
done
copied=$(version_of "$partial")
[ "$copied" = "$image" ] || fail "the copy in $partial has WordPress '$copied', not $image"
sync
mv "$partial" "$staging"
install_staged

now=$(version_of "$dst")
[ "$now" = "$image" ] || fail "WordPress in $dst is '$now' after the upgrade, not $image"
log "WordPress core upgraded from $volume to $image; the setup Job upgrades the database after the sync"
