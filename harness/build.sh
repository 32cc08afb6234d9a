#!/usr/bin/env bash
# Build every control-plane binary the tests use from Go modules, at the versions pinned in
# harness/versions.env, into ${STOREOPS_CACHE:-$HOME/.cache/storeops}/bin/<name>-<version>/.
#
# Idempotent: a finished folder is reused as is; a folder is only moved into place once complete,
# so an interrupted build leaves nothing half-made behind. The Go build cache (go env GOCACHE) is
# never cleaned, so a rebuild after a version bump only recompiles what changed.
#
# Usage: bash harness/build.sh            build what is missing
#        bash harness/build.sh --print    print the bin folder of each component and exit
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
. "$HERE/versions.env"

CACHE=${STOREOPS_CACHE:-$HOME/.cache/storeops}
BIN=$CACHE/bin
WORK=$CACHE/work
# -trimpath and -s -w keep the binaries lean; CGO off so nothing needs a C toolchain.
export CGO_ENABLED=0
# The wrapper modules' go.sum files are committed: never let a build rewrite them.
export GOFLAGS="-mod=readonly -buildvcs=false"
export GOTOOLCHAIN=${GOTOOLCHAIN:-local}
# argo-cd's go.mod says go 1.26.3.
GO_MIN=1.26.3
# Two cores: two parallel compiles is what the machine can take without thrashing.
GO_P=${STOREOPS_GO_P:-2}

log() { printf '[build %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf '[build] ERROR: %s\n' "$*" >&2; exit 1; }

declare -A DIRS=(
  [etcd]="$BIN/etcd-$ETCD_VERSION"
  [kubernetes]="$BIN/kubernetes-$KUBERNETES_VERSION"
  [kwok]="$BIN/kwok-$KWOK_VERSION"
  [helm]="$BIN/helm-$HELM_VERSION"
  [argocd]="$BIN/argocd-$ARGOCD_VERSION"
  # The node's kubelet and kube-proxy: a folder of their own, so adding them never rebuilds the
  # control plane's kubernetes-<version> folder.
  [node]="$BIN/node-$KUBERNETES_VERSION"
  # Programs for the node's local images (harness/images/<name>), keyed by a hash of their sources
  # (versions.source_hash).
  [pause]="$BIN/pause-$(cd "$HERE/images/pause" && cat go.mod main.go | sha256sum | cut -c1-16)"
  # The node's add-ons (harness/addons.py).
  [coredns]="$BIN/coredns-$COREDNS_VERSION"
  [netpol]="$BIN/kube-network-policies-$KUBE_NETWORK_POLICIES_VERSION"
  [traefik]="$BIN/traefik-$TRAEFIK_VERSION"
  # The S3-compatible object store for store backups (a host process in tests, an add-on Pod on the node).
  [seaweedfs]="$BIN/seaweedfs-$SEAWEEDFS_VERSION"
  [apiprobe]="$BIN/apiprobe-$(cd "$HERE/images/apiprobe" && cat go.mod main.go | sha256sum | cut -c1-16)"
  # The real node's CSI driver (harness/csi, keyed by a hash of its sources: versions.csi_source_hash)
  # and the two sidecars that drive it (harness/csi.py).
  [csi]="$BIN/storeops-csi-$(cd "$HERE/csi" && LC_ALL=C cat go.mod go.sum ./*.go | sha256sum | cut -c1-16)"
  [csi-provisioner]="$BIN/csi-provisioner-$CSI_PROVISIONER_VERSION"
  [csi-resizer]="$BIN/csi-resizer-$CSI_RESIZER_VERSION"
)

if [[ ${1:-} == --print ]]; then
  for name in etcd kubernetes kwok helm argocd node pause apiprobe coredns netpol traefik seaweedfs csi csi-provisioner csi-resizer; do printf '%s=%s\n' "$name" "${DIRS[$name]}"; done
  exit 0
fi

ensure_apt_packages() {
  # command -> Debian package
  local -A want=([redis-server]=redis-server [openssl]=openssl [git]=git)
  local missing=()
  for cmd in "${!want[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("${want[$cmd]}")
  done
  # The real node (harness/node.py): containerd (CRI) + runc, the CNI plugins (bridge, host-local,
  # loopback, portmap in /usr/lib/cni), iptables and conntrack for kube-proxy and the pod network's
  # boundary, and the static busybox the test images are made of.
  local -A node=([containerd]=containerd [runc]=runc [iptables]=iptables [conntrack]=conntrack
    [ip]=iproute2 [/usr/lib/cni/bridge]=containernetworking-plugins [/bin/busybox]=busybox-static
    [mmdebstrap]=mmdebstrap
    # The CSI driver's volumes (harness/csi): ext4 images, loop-mounted, grown offline.
    [mkfs.ext4]=e2fsprogs [resize2fs]=e2fsprogs [dumpe2fs]=e2fsprogs [losetup]=mount)
  for cmd in "${!node[@]}"; do
    if [[ $cmd == /* ]]; then
      [[ -x $cmd ]] || missing+=("${node[$cmd]}")
    else
      command -v "$cmd" >/dev/null 2>&1 || missing+=("${node[$cmd]}")
    fi
  done
  if ((${#missing[@]})); then
    log "installing Debian packages: ${missing[*]}"
    local sudo=()
    ((EUID == 0)) || sudo=(sudo)
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
  fi
}

check_go() {
  command -v go >/dev/null 2>&1 || die "go is not installed; Go >= $GO_MIN is needed (argo-cd $ARGOCD_VERSION's go.mod)"
  local v major minor patch
  v=$(GOTOOLCHAIN=local go env GOVERSION)
  v=${v#go}
  IFS=. read -r major minor patch <<<"$v"
  patch=${patch%%[!0-9]*}
  patch=${patch:-0}
  local want_minor=${GO_MIN#1.} want_patch
  want_patch=${want_minor#*.}
  want_minor=${want_minor%%.*}
  if ((major < 1 || (major == 1 && (minor < want_minor || (minor == want_minor && patch < want_patch))))); then
    # The go command can fetch a newer toolchain as a module from the proxy.
    export GOTOOLCHAIN="go$GO_MIN+auto"
    log "go $v is older than $GO_MIN: using GOTOOLCHAIN=$GOTOOLCHAIN (fetched from the module proxy)"
  fi
}

# timed NAME CMD...: run CMD, log how long it took.
timed() {
  local name=$1 start
  shift
  start=$(date +%s)
  "$@"
  log "$name built in $(($(date +%s) - start))s"
}

# begin NAME: prints 1 and returns non-zero when the folder is already complete.
begin() {
  local name=$1 dir=${DIRS[$1]}
  if [[ -d $dir ]]; then
    log "$name: cached in $dir"
    return 1
  fi
  rm -rf "$dir.partial"
  mkdir -p "$dir.partial"
  log "$name: building into $dir"
}
finish() {
  local dir=${DIRS[$1]}
  mv "$dir.partial" "$dir"
}

build_etcd() {
  begin etcd || return 0
  (cd "$HERE/gomod/etcd" &&
    grep -Eq "^\s*(require )?go.etcd.io/etcd/server/v3 $ETCD_VERSION( |\$)" go.mod ||
    die "harness/gomod/etcd/go.mod does not require go.etcd.io/etcd/server/v3 $ETCD_VERSION")
  (cd "$HERE/gomod/etcd" &&
    timed etcd go build -p "$GO_P" -trimpath -ldflags="-s -w" \
      -o "${DIRS[etcd]}.partial/etcd" go.etcd.io/etcd/server/v3)
  finish etcd
}

# The -X flags every Kubernetes binary is built with.
kube_ldflags() {
  local v=$KUBERNETES_VERSION minor=${KUBERNETES_VERSION#v1.}
  minor=${minor%%.*}
  local ld="-s -w" pkg
  # Without these /version says v0.0.0 and Argo CD hands Helm a wrong --kube-version.
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  done
  printf '%s' "$ld"
}

build_kubernetes() {
  begin kubernetes || return 0
  local v=$KUBERNETES_VERSION staging=v0.${KUBERNETES_VERSION#v1.}
  local mod=$HERE/gomod/kubernetes/go.mod
  grep -Eq "^\s*(require )?k8s.io/kubernetes $v( |\$)" "$mod" || die "$mod does not require k8s.io/kubernetes $v"
  if grep '=> k8s.io/' "$mod" | grep -v " $staging\$" >&2; then
    die "$mod: every staging replace must be $staging (lines above)"
  fi
  local ld cmd
  ld=$(kube_ldflags)
  for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    (cd "$HERE/gomod/kubernetes" &&
      timed "$cmd" go build -p "$GO_P" -trimpath -ldflags="$ld" \
        -o "${DIRS[kubernetes]}.partial/$cmd" "k8s.io/kubernetes/cmd/$cmd")
  done
  finish kubernetes
}

# The node binaries come from their own wrapper module (gomod/node): the kubelet needs modules the
# control plane does not, and that module's go.sum must not move the control plane's build.
build_node() {
  begin node || return 0
  local v=$KUBERNETES_VERSION staging=v0.${KUBERNETES_VERSION#v1.}
  local mod=$HERE/gomod/node/go.mod
  grep -Eq "^\s*(require )?k8s.io/kubernetes $v( |\$)" "$mod" || die "$mod does not require k8s.io/kubernetes $v"
  if grep '=> k8s.io/' "$mod" | grep -v " $staging\$" >&2; then
    die "$mod: every staging replace must be $staging (lines above)"
  fi
  local cmd
  for cmd in kubelet kube-proxy; do
    (cd "$HERE/gomod/node" &&
      timed "$cmd" go build -p "$GO_P" -trimpath -ldflags="$(kube_ldflags)" \
        -o "${DIRS[node]}.partial/$cmd" "k8s.io/kubernetes/cmd/$cmd")
  done
  finish node
}

# Static Go programs (standard library only) that harness/images packs into the node's images:
# pause, the sandbox process every Pod's namespaces hang on; apiprobe, an in-cluster API client
# for test Pods.
build_image_program() {
  local name=$1
  begin "$name" || return 0
  (cd "$HERE/images/$name" &&
    timed "$name" go build -trimpath -ldflags="-s -w" -o "${DIRS[$name]}.partial/$name" .)
  finish "$name"
}

build_coredns() {
  begin coredns || return 0
  timed coredns env GOBIN="${DIRS[coredns]}.partial" go install -p "$GO_P" -trimpath \
    -ldflags="-s -w" "github.com/coredns/coredns@$COREDNS_VERSION"
  finish coredns
}

build_netpol() {
  begin netpol || return 0
  # The module's command is its cmd/ folder, which go install names "cmd".
  timed kube-network-policies env GOBIN="${DIRS[netpol]}.partial" go install -p "$GO_P" -trimpath \
    -ldflags="-s -w" "sigs.k8s.io/kube-network-policies/cmd@$KUBE_NETWORK_POLICIES_VERSION"
  mv "${DIRS[netpol]}.partial/cmd" "${DIRS[netpol]}.partial/kube-network-policies"
  finish netpol
}

build_traefik() {
  begin traefik || return 0
  local mod=$HERE/gomod/traefik/go.mod
  grep -Eq "^\s*(require )?github.com/traefik/traefik/v3 $TRAEFIK_VERSION( |\$)" "$mod" ||
    die "$mod does not require github.com/traefik/traefik/v3 $TRAEFIK_VERSION"
  (cd "$HERE/gomod/traefik" &&
    timed traefik go build -p "$GO_P" -trimpath \
      -ldflags="-s -w -X github.com/traefik/traefik/v3/pkg/version.Version=${TRAEFIK_VERSION#v}" \
      -o "${DIRS[traefik]}.partial/traefik" github.com/traefik/traefik/v3/cmd/traefik)
  finish traefik
}

build_seaweedfs() {
  begin seaweedfs || return 0
  local mod=$HERE/gomod/seaweedfs/go.mod
  grep -Eq "^\s*(require )?github.com/seaweedfs/seaweedfs $SEAWEEDFS_VERSION( |\$)" "$mod" ||
    die "$mod does not require github.com/seaweedfs/seaweedfs $SEAWEEDFS_VERSION"
  (cd "$HERE/gomod/seaweedfs" &&
    timed seaweedfs go build -p "$GO_P" -trimpath -ldflags="-s -w" \
      -o "${DIRS[seaweedfs]}.partial/weed" github.com/seaweedfs/seaweedfs/weed)
  finish seaweedfs
}

# The harness's CSI driver: a module of its own (harness/csi) with a committed go.sum.
build_csi() {
  begin csi || return 0
  (cd "$HERE/csi" &&
    timed storeops-csi go build -p "$GO_P" -trimpath -ldflags="-s -w" -o "${DIRS[csi]}.partial/storeops-csi" .)
  finish csi
}

# A CSI sidecar from its wrapper module (harness/gomod/<name>): `go install module@version` would ask the
# proxy for the module's version list (for deprecations), which the proxy does not serve for these.
# build_csi_sidecar NAME MODULE VERSION PACKAGE
build_csi_sidecar() {
  local name=$1 module=$2 version=$3 package=$4
  begin "$name" || return 0
  local mod=$HERE/gomod/$name/go.mod
  grep -Eq "^\s*(require )?$module $version( |\$)" "$mod" || die "$mod does not require $module $version"
  (cd "$HERE/gomod/$name" &&
    timed "$name" go build -p "$GO_P" -trimpath -ldflags="-s -w -X main.version=$version" \
      -o "${DIRS[$name]}.partial/$name" "$package")
  finish "$name"
}

build_kwok() {
  begin kwok || return 0
  timed kwok env GOBIN="${DIRS[kwok]}.partial" go install -p "$GO_P" -trimpath \
    -ldflags="-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}" \
    "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  # Stage configs ship in the module, not in the binary's defaults we want to rely on: copy the
  # node (initialize + lease heartbeat) and pod (ready/complete/delete) stages into one file.
  local src
  src=$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  [[ -d $src/kustomize/stage ]] || die "kwok module has no kustomize/stage folder at $src"
  local out=${DIRS[kwok]}.partial/stages.yaml f first=1
  : >"$out"
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
    pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    [[ -f $src/kustomize/stage/$f ]] || die "kwok stage $f missing from $src/kustomize/stage"
    ((first)) || echo '---' >>"$out"
    first=0
    cat "$src/kustomize/stage/$f" >>"$out"
  done
  finish kwok
}

build_helm() {
  begin helm || return 0
  timed helm env GOBIN="${DIRS[helm]}.partial" go install -p "$GO_P" -trimpath \
    -ldflags="-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v4/cmd/helm@$HELM_VERSION"
  finish helm
}

# Files the repo-server runs next to the binary, as the argo-cd image has them in /usr/local/bin:
# it execs git-verify-wrapper.sh for every git revision. Copied from the module, not committed.
argocd_support_files() {
  local src=$1 out=$2 f
  for f in git-verify-wrapper.sh gpg-wrapper.sh; do
    [[ -f $src/hack/$f ]] || die "argo-cd $ARGOCD_VERSION has no hack/$f"
    install -m 0755 "$src/hack/$f" "$out/$f"
  done
}

build_argocd() {
  local dir=${DIRS[argocd]}
  if [[ -d $dir && ! -x $dir/git-verify-wrapper.sh ]]; then
    # A folder from before build.sh copied the support files: complete it in place.
    argocd_support_files "$(go mod download -json "github.com/argoproj/argo-cd/v3@$ARGOCD_VERSION" |
      sed -n 's/.*"Dir": "\(.*\)".*/\1/p')" "$dir"
  fi
  begin argocd || return 0
  # The published argo-cd module replaces github.com/argoproj/argo-cd/gitops-engine with its
  # ./gitops-engine folder, which module zips leave out. Build from a writable copy whose replace
  # points at the proxy's copy of that module instead; every other replace stays as upstream has it.
  local src
  src=$(go mod download -json "github.com/argoproj/argo-cd/v3@$ARGOCD_VERSION" |
    sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  [[ -f $src/go.mod ]] || die "could not download github.com/argoproj/argo-cd/v3@$ARGOCD_VERSION"
  local work=$WORK/argo-cd-$ARGOCD_VERSION
  if [[ ! -f $work/.ready ]]; then
    rm -rf "$work"
    mkdir -p "$work"
    cp -r "$src/." "$work/"
    chmod -R u+w "$work"
    (cd "$work" &&
      go mod edit -replace "github.com/argoproj/argo-cd/gitops-engine=github.com/argoproj/argo-cd/gitops-engine@$GITOPS_ENGINE_VERSION" &&
      GOFLAGS=-mod=mod go mod download github.com/argoproj/argo-cd/gitops-engine)
    touch "$work/.ready"
  fi
  local out=${DIRS[argocd]}.partial
  # -mod=mod: this copy's go.sum gains the gitops-engine module's hashes (the copy is ours to change).
  (cd "$work" &&
    timed argocd env GOFLAGS="-mod=mod -buildvcs=false" go build -p "$GO_P" -trimpath \
      -ldflags="-s -w -X github.com/argoproj/argo-cd/v3/common.version=${ARGOCD_VERSION#v} -X github.com/argoproj/argo-cd/v3/common.gitTreeState=clean" \
      -o "$out/argocd" ./cmd)
  # The multi-call binary picks its role from its file name (or ARGOCD_BINARY_NAME).
  local role
  for role in argocd-application-controller argocd-repo-server; do ln -s argocd "$out/$role"; done
  argocd_support_files "$src" "$out"
  mkdir -p "$out/crds"
  cp "$work"/manifests/crds/*-crd.yaml "$out/crds/"
  ls "$out/crds/application-crd.yaml" "$out/crds/appproject-crd.yaml" >/dev/null ||
    die "argo-cd $ARGOCD_VERSION has no manifests/crds/application-crd.yaml"
  finish argocd
}

main() {
  local start
  start=$(date +%s)
  ensure_apt_packages
  check_go
  mkdir -p "$BIN" "$WORK"
  # One build at a time per cache: a second build.sh waits, then finds everything cached.
  exec 9>"$CACHE/.build.lock"
  if ! flock -n 9; then
    log "another build.sh holds $CACHE/.build.lock; waiting for it"
    flock 9
  fi
  log "cache: $BIN (Go build cache: $(go env GOCACHE))"
  build_etcd
  build_kwok
  build_helm
  build_kubernetes
  build_argocd
  build_node
  build_image_program pause
  build_image_program apiprobe
  build_coredns
  build_netpol
  build_traefik
  build_seaweedfs
  build_csi
  build_csi_sidecar csi-provisioner github.com/kubernetes-csi/external-provisioner/v6 "$CSI_PROVISIONER_VERSION" \
    github.com/kubernetes-csi/external-provisioner/v6/cmd/csi-provisioner
  build_csi_sidecar csi-resizer github.com/kubernetes-csi/external-resizer "$CSI_RESIZER_VERSION" \
    github.com/kubernetes-csi/external-resizer/cmd/csi-resizer
  log "all binaries ready in $(($(date +%s) - start))s"
}

main "$@"
