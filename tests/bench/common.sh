# Sourced by the benchmarks, which define `repo` (the checkout) and `die`.
#
# executor_binary: sets EXECUTOR to a release build of this checkout
# (`cargo build --release`) unless EXECUTOR names a binary already.
#
# debian_layout: sets `layout` to an OCI layout under BENCH_CACHE whose tag
# `plain` is the Debian rootfs tarball (DEBIAN_TARBALL, default what
# tests/fixtures/debian-base.sh prints) as one layer, made once and shared
# by the benchmarks (they may add tags, never change `plain`).
#
# start_registry DIR: starts Debian's docker-registry on a free 127.0.0.1
# port with its storage and log under DIR, waits until it answers, and sets
# `registry` (HOST:PORT) and `registry_pid`; the caller stops it on exit.

executor_binary() {
  if [[ -z ${EXECUTOR:-} ]]; then
    echo "== cargo build --release -p executor" >&2
    (cd "$repo" && cargo build --release --locked -p executor >&2)
    EXECUTOR=${CARGO_TARGET_DIR:-$repo/target}/release/executor
  fi
  [[ -x $EXECUTOR ]] || die "no executor binary at $EXECUTOR"
}

start_registry() {
  local dir=$1 port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  registry=127.0.0.1:$port
  cat >"$dir/registry.yml" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $dir/registry
http:
  addr: $registry
YAML
  docker-registry serve "$dir/registry.yml" >"$dir/registry.log" 2>&1 &
  registry_pid=$!
  for _ in $(seq 100); do
    curl -fsS "http://$registry/v2/" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "the registry did not start: $(cat "$dir/registry.log")"
}

debian_layout() {
  if [[ -z ${DEBIAN_TARBALL:-} ]]; then
    DEBIAN_TARBALL=$(bash "$repo/tests/fixtures/debian-base.sh") ||
      die "tests/fixtures/debian-base.sh failed"
  fi
  [[ -s $DEBIAN_TARBALL ]] || die "no Debian rootfs tarball at $DEBIAN_TARBALL"
  layout=$BENCH_CACHE/debian-oci-$(stat -c %s "$DEBIAN_TARBALL")
  mkdir -p "$BENCH_CACHE"
  if [[ ! -f $layout/.plain-complete ]]; then
    echo "== making the Debian base image from $DEBIAN_TARBALL (once)" >&2
    rm -rf "$layout" "$layout.bundle"
    umoci init --layout "$layout"
    umoci new --image "$layout:plain"
    umoci unpack --image "$layout:plain" "$layout.bundle" >/dev/null
    tar -C "$layout.bundle/rootfs" --numeric-owner --xattrs --xattrs-include='*' \
      -xpf "$DEBIAN_TARBALL"
    umoci repack --image "$layout:plain" "$layout.bundle"
    umoci config --image "$layout:plain" --config.cmd bash \
      --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    rm -rf "$layout.bundle"
    touch "$layout/.plain-complete"
  fi
}
