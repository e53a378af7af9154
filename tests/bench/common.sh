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
# busybox_layout: sets `layout` to an OCI layout under BENCH_CACHE whose tag
# `latest` is the busybox image the tests use (tests/src/lib.rs
# busybox_layout: /bin/busybox from busybox-static with its applets,
# /etc/passwd and /etc/group), made once.
#
# pick_buildah_driver DIR: sets `driver` to overlay where buildah's overlay
# storage works here, else vfs (trying it under DIR, removed afterwards).
#
# cleanup_buildah ROOT: removes the images of the buildah storage under ROOT
# (`ROOT/root`, `ROOT/run`, driver `driver`) and unmounts what the overlay
# driver may leave mounted below ROOT.
#
# start_registry DIR: starts Debian's docker-registry on a free 127.0.0.1
# port with its storage (DIR/registry) and log (DIR/registry.log, its access
# log included) under DIR, waits until it answers, and sets `registry`
# (HOST:PORT) and `registry_pid`; the caller stops it on exit.
#
# registry_layer_bytes DIR OFFSET: prints "BYTES BLOBS", the layer bytes
# (and layer blobs) the registry started in DIR served after byte OFFSET of
# its log: blob GETs answered 200/206 in the access log, of digests that a
# manifest stored in the registry lists under `layers` (so neither image
# configs nor cache-entry JSON count; HEADs download nothing).

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
  accesslog:
    disabled: false
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

busybox_layout() {
  [[ -x /bin/busybox ]] || die "/bin/busybox is missing
hint: apt-get install -y busybox-static"
  layout=$BENCH_CACHE/busybox-oci
  mkdir -p "$BENCH_CACHE"
  if [[ ! -f $layout/.complete ]]; then
    echo "== making the busybox base image (once)" >&2
    rm -rf "$layout" "$layout.bundle"
    umoci init --layout "$layout"
    umoci new --image "$layout:latest"
    umoci unpack --image "$layout:latest" "$layout.bundle" >/dev/null
    local rootfs=$layout.bundle/rootfs applet
    mkdir -p "$rootfs"/{bin,etc,tmp,root,home}
    cp /bin/busybox "$rootfs/bin/busybox"
    for applet in $(/bin/busybox --list); do
      [[ $applet == busybox ]] || ln -s busybox "$rootfs/bin/$applet"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$rootfs/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
    umoci repack --image "$layout:latest" "$layout.bundle"
    umoci config --image "$layout:latest" --config.cmd /bin/sh \
      --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    rm -rf "$layout.bundle"
    touch "$layout/.complete"
  fi
}

registry_layer_bytes() {
  python3 - "$1" "$2" <<'PY'
import json, os, re, sys

top, offset = sys.argv[1], int(sys.argv[2])
v2 = os.path.join(top, "registry", "docker", "registry", "v2")

def blob(digest):
    hexd = digest.split(":", 1)[1]
    try:
        with open(os.path.join(v2, "blobs", "sha256", hexd[:2], hexd, "data"), "rb") as f:
            return f.read()
    except OSError:
        return None

layers = set()
for root, dirs, _ in os.walk(os.path.join(v2, "repositories")):
    if root.endswith(os.path.join("_manifests", "revisions", "sha256")):
        for d in dirs:
            data = blob("sha256:" + d)
            try:
                manifest = json.loads(data) if data else {}
            except ValueError:
                continue
            for layer in manifest.get("layers") or []:
                layers.add(layer.get("digest"))

line_re = re.compile(r'\] "GET /v2/\S+/blobs/(sha256:[0-9a-f]{64})\S* HTTP/[0-9.]+" (200|206) (\d+)')
total = count = 0
with open(os.path.join(top, "registry.log"), "rb") as f:
    f.seek(offset)
    for line in f.read().decode("utf-8", "replace").splitlines():
        m = line_re.search(line)
        if m and m.group(1) in layers:
            total += int(m.group(3))
            count += 1
print(total, count)
PY
}

pick_buildah_driver() {
  local probe=$1
  driver=overlay
  if ! buildah --root "$probe/root" --runroot "$probe/run" --storage-driver overlay \
    images >/dev/null 2>&1; then
    driver=vfs
  fi
  cleanup_buildah "$probe"
  rm -rf "$probe"
}

cleanup_buildah() {
  local root=$1
  [[ -d $root ]] || return 0
  buildah --root "$root/root" --runroot "$root/run" --storage-driver "$driver" \
    rmi --all --force >/dev/null 2>&1 || true
  # The overlay driver may leave its home bind-mounted.
  local m
  for m in $(findmnt -rn -o TARGET | grep -F "$root/" | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
}
