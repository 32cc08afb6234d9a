#!/usr/bin/env bash
# A cold CI run, timed: .ci/run on a clean clone of HEAD with an empty HOME, so no Go module or build
# cache, no pip or npm cache and no built binaries or store images (~/.cache/storeops) are reused.
# Debian packages already installed stay installed. Needs root (the real node) and about 20 GB of disk.
# Usage: bench/cold_ci.sh [WORKDIR]   (default: a new folder under /tmp; kept for its logs)
set -euo pipefail
work=${1:-$(mktemp -d /tmp/storeops-cold.XXXXXX)}
mkdir -p "$work/home"
git clone -q "$(git rev-parse --show-toplevel)" "$work/repo"
echo "cold run of $(git -C "$work/repo" rev-parse --short HEAD) in $work (log: $work/ci.log)"
start=$(date +%s)
set +e
(cd "$work/repo" && env -u STOREOPS_CACHE -u GOCACHE -u GOPATH -u GOMODCACHE HOME="$work/home" .ci/run) \
  >"$work/ci.log" 2>&1
rc=$?
set -e
end=$(date +%s)
built=$(grep -o 'all binaries ready in [0-9]*s' "$work/ci.log" | tail -1 || true)
suite=$(grep -E '^=+ .*(passed|failed).* in [0-9.]+s' "$work/ci.log" | tail -1 || true)
echo "exit $rc after $((end - start)) s ($(( (end - start) / 60 )) min); ${built:-no build line}; suite: ${suite:-no summary}"
exit $rc
