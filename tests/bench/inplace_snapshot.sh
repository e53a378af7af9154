#!/usr/bin/env bash
# Benchmark (not a test): how long the snapshot of a RUN that touches one
# file takes on a base image of N files, three ways:
#   in-place   /kaniko/executor in a default pod (tests/src/pod.py: no
#              CAP_SYS_ADMIN, RuntimeDefault seccomp) of the executor image
#              (examples/image/build.sh, unpacked with umoci): metadata walks
#              of / before and after the step;
#   namespace  --isolation=namespace: an overlay upper directory is the diff;
#   full       --isolation=namespace --snapshot-mode=full: a copy of the root
#              before the step, compared file by file after it (every file
#              opened and read), the cost of a full-content walk.
# Printed: the snapshot's time as the build logs it at debug level (what
# is done before the step to compare with, plus the comparison after it;
# not the step itself, nor making the root, nor writing the one-file
# layer), for each N.
#
#   tests/bench/inplace_snapshot.sh [N...]     (default: 50000 200000 500000)
#
# Measured on the 2-core development machine, shared with other builds
# (release binary, before walks lstat'ed through the directory entry):
#   files     in-place          namespace  full
#   50000     0.49s (0.26+0.22) 0.25s      4.97s
#   200000    1.49s (0.72+0.77) 0.21s      35.76s
#   500000    3.52s (1.52+2.00) 0.52s      35.81s
# (in place: the walk before the step + the walk and comparison after it.)
#
# The base's files are empty (inodes, not data: 500,000 of them fit any
# disk), in directories of 1,000. Needs root, docker-registry, umoci,
# busybox-static, python3. EXECUTOR=PATH uses that binary instead of a
# release build; OUT (default target/bench) keeps the logs.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
say() { printf '\n== %s\n' "$*" >&2; }
# shellcheck source=examples/common.sh
source examples/common.sh
counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(50000 200000 500000)
executor_binary
out=${OUT:-$root/target/bench}
rm -rf "$out"
mkdir -p "$out"
registry_pid=
cleanup() {
    [ -z "$registry_pid" ] || kill "$registry_pid" 2>/dev/null || true
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$out/registry"
printf 'version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' \
    "$out/registry" "$port" >"$out/registry.yml"
docker-registry serve "$out/registry.yml" >"$out/registry.log" 2>&1 &
registry_pid=$!
registry=127.0.0.1:$port
for _ in $(seq 100); do
    python3 -c "import urllib.request; urllib.request.urlopen('http://$registry/v2/')" 2>/dev/null && break
    sleep 0.1
done
common=(--insecure-registry "$registry" --cache-dir "$out/store")

say "the busybox base and the executor image"
cp -a examples/busybox-base "$out/busybox-base"
bash examples/busybox-base/make-rootfs.sh "$out/busybox-base/rootfs"
"$executor" build "${common[@]}" --context "$out/busybox-base" \
    --destination "$registry/bench/busybox:1" >"$out/busybox.log" 2>&1
OUT=$out/image EXECUTOR=$executor bash examples/image/build.sh >"$out/image.log" 2>&1
umoci unpack --image "$out/image/layout-default:docker.io/library/executor:latest" "$out/pod-image" >/dev/null

# The snapshot's time in a build log: "snapshot (in-place): 1.234s (...)".
step_time() { grep -o 'snapshot ([a-z-]*): [0-9.]*s' "$1" | grep -o '[0-9.]*s$'; }

printf '%-9s %-10s %-10s %-10s\n' files in-place namespace full
for n in "${counts[@]}"; do
    base=$registry/bench/files-$n:1
    mkdir -p "$out/base-$n"
    printf 'FROM %s\nRUN mkdir /data && cd /data && for d in $(seq 1 %d); do mkdir $d; cd $d; touch $(seq 1 1000); cd ..; done\n' \
        "$registry/bench/busybox:1" "$((n / 1000))" >"$out/base-$n/Dockerfile"
    "$executor" build "${common[@]}" --isolation=namespace --context "$out/base-$n" \
        --destination "$base" >"$out/base-$n.log" 2>&1
    ctx=$out/run-$n
    mkdir -p "$ctx"
    printf 'FROM %s\nRUN echo touched > /data/1/1\n' "$base" >"$ctx/Dockerfile"
    "$executor" build --insecure-registry "$registry" --cache-dir "$out/store-ns-$n" \
        --isolation=namespace --context "$ctx" --no-push -v debug >"$out/namespace-$n.log" 2>&1
    "$executor" build --insecure-registry "$registry" --cache-dir "$out/store-full-$n" \
        --isolation=namespace --snapshot-mode=full --context "$ctx" --no-push -v debug >"$out/full-$n.log" 2>&1
    rm -rf "$out/store-ns-$n" "$out/store-full-$n"
    pod=$out/pod-$n
    mkdir -p "$pod/upper" "$pod/work" "$pod/merged" "$pod/out"
    echo pod >"$pod/out/hostname"
    config=$(python3 - "$out" "$pod" "$ctx" "$registry" <<'PY'
import json, sys
out, pod, ctx, registry = sys.argv[1:]
print(json.dumps({
    "image": out + "/pod-image/rootfs", "overlay": True,
    "upper": pod + "/upper", "work": pod + "/work", "merged": pod + "/merged",
    "etc": {"hosts": "/etc/hosts", "resolv.conf": "/etc/resolv.conf", "hostname": pod + "/out/hostname"},
    "volumes": [out],
    "env": {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/kaniko",
            "HOME": "/root", "DOCKER_CONFIG": "/kaniko/.docker/", "LD_LIBRARY_PATH": "/kaniko/lib",
            "SSL_CERT_FILE": "/kaniko/ssl/certs/ca-certificates.crt",
            "KUBERNETES_SERVICE_HOST": "10.0.0.1"},
    "commands": [["/kaniko/executor", "build", "--insecure-registry", registry,
                  "--cache-dir", pod + "/out/store", "--context", ctx, "--no-push",
                  "-v", "debug"]],
    "statuses": pod + "/out/statuses.json",
}))
PY
)
    python3 tests/src/pod.py "$config" >"$out/in-place-$n.log" 2>&1
    grep -q '\[0\]' "$pod/out/statuses.json" || { cat "$out/in-place-$n.log" >&2; exit 1; }
    rm -rf "$pod"
    printf '%-9s %-10s %-10s %-10s\n' "$n" "$(step_time "$out/in-place-$n.log")" \
        "$(step_time "$out/namespace-$n.log")" "$(step_time "$out/full-$n.log")"
done
