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

say() { printf '\n== %s\n' "$*" >&2; }
# shellcheck source=examples/common.sh
source examples/common.sh

need=()
[ -x /bin/busybox ] || need+=(busybox-static)
if [ -z "${EXECUTOR:-}" ]; then
    command -v cc >/dev/null || need+=(build-essential)
    command -v pkg-config >/dev/null || need+=(pkg-config libssl-dev)
    command -v git >/dev/null || need+=(git)
fi
install_missing ${need[@]+"${need[@]}"}
executor_binary

say "putting busybox from Debian's busybox-static in examples/quickstart/rootfs"
bash examples/busybox-base/make-rootfs.sh examples/quickstart/rootfs

say "executor run examples/quickstart/pipeline.yaml"
"$executor" run examples/quickstart/pipeline.yaml "$@"
