#!/usr/bin/env bash
# The README's first command: the quickstart pipeline end to end on a fresh
# Debian machine, offline, with executor's defaults (no registry, the
# local store in ~/.cache/executor, logs in .executor/runs).
#
#   1. installs what it needs from Debian when missing (as root):
#      busybox-static, a C toolchain, pkg-config and libssl-dev;
#   2. builds `executor` (release) unless EXECUTOR names a binary;
#   3. puts busybox and its applets in examples/quickstart/rootfs/ (the
#      image's base: no public registry is needed);
#   4. runs `executor run examples/quickstart/pipeline.yaml`: the build job
#      builds the image into the local store, the test job runs inside it.
#
# Extra arguments go to `executor run` (e.g. --cache-dir DIR, --dry-run).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

say() { printf '\n== %s\n' "$*" >&2; }

need=()
[ -x /bin/busybox ] || need+=(busybox-static)
if [ -z "${EXECUTOR:-}" ]; then
    command -v cc >/dev/null || need+=(build-essential)
    command -v pkg-config >/dev/null || need+=(pkg-config libssl-dev)
    command -v git >/dev/null || need+=(git)
fi
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "missing packages: ${need[*]} (run as root, or install them)" >&2
        exit 1
    fi
    say "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" ca-certificates >/dev/null
fi

if [ -n "${EXECUTOR:-}" ]; then
    executor=$EXECUTOR
else
    say "building executor (release)"
    cargo build --release --locked -p executor --bin executor
    executor="${CARGO_TARGET_DIR:-$root/target}/release/executor"
fi

say "putting busybox from Debian's busybox-static in examples/quickstart/rootfs"
bash examples/busybox-base/make-rootfs.sh examples/quickstart/rootfs

say "executor run examples/quickstart/pipeline.yaml"
"$executor" run examples/quickstart/pipeline.yaml "$@"
