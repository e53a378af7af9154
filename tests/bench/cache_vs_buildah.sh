#!/usr/bin/env bash
# cache_vs_buildah.sh: how fast is a rebuild without change on a fresh CI
# machine, whose only cache is the registry, and how many layer bytes does
# it download? (issue 5's benchmark)
#
# Two cases, each with executor (release build) and
# `buildah bud --isolation=chroot --format docker --layers` in the same run:
#   flask      examples/flask-app as it is in the repository, on a python
#              base (the tests' Debian base + `apt-get install python3
#              python3-pip`, as run_debian.rs's Flask test makes it). The
#              python base is made once by executor and kept under
#              BENCH_CACHE; making it needs the Debian mirror, and the fills
#              below need PyPI (pip install flask); the timed rounds need
#              neither.
#   busybox20  20 RUN steps on the tests' busybox image (run_cold.sh's
#              Dockerfile): each writes a 256 KiB random file and a log line
#              and deletes an older file, so every step has a layer.
# Both tools build from the same base images, pushed to a docker-registry
# started on a free 127.0.0.1 port for the run.
#
# First each tool fills a cache repository of its own on that registry
# once, on storage of its own:
#   executor  executor build --cache=true --cache-repo REG/bench/CASE/executor-cache
#   buildah   buildah bud --layers --cache-to REG/bench/CASE/buildah-cache
# Then RUNS rounds of the rebuild without change, each tool on empty local
# storage (what is timed, per tool):
#   executor  executor build --cache=true --cache-repo ... --cache-dir EMPTY
#             -d REG/bench/CASE/executor:roundN   (the build and its push)
#   buildah   buildah --root EMPTY --runroot EMPTY bud --layers
#             --cache-from REPO --cache-to REPO -t REG/bench/CASE/buildah:roundN,
#             then buildah push of that tag (the build and its push)
# (PUSH=0 times the builds alone: executor --no-push, no buildah push.)
# The layer bytes each tool downloaded come from the registry's own access
# log: blob GETs answered 200/206 of digests some stored manifest lists
# under `layers` (common.sh registry_layer_bytes). For executor, the steps
# its --metrics-file reports cached are printed too.
#
# Prints per round both times, executor/buildah, and both tools' layer
# bytes; then the medians. Exits 1 when executor misses issue 5's target (a
# median ratio under TARGET_RATIO, zero layer bytes in every round, every
# step cached), 2 on a setup or build failure.
#
#   tests/bench/cache_vs_buildah.sh                  # three rounds of each
#   RUNS=1 CASES=busybox20 tests/bench/cache_vs_buildah.sh
#
# Settings (environment):
#   RUNS=3              rounds per case
#   CASES="flask busybox20"
#   PUSH=1              time build + push (0: the builds alone)
#   TARGET_RATIO=0.1    the pass line for executor/buildah
#   DEBIAN_TARBALL=path the Debian rootfs tarball (default: what
#                       tests/fixtures/debian-base.sh prints)
#   BENCH_CACHE=~/.cache/executor-bench   where the bases' layouts live
#   BENCH_TMP=/tmp      where the registry, stores and logs go
#   EXECUTOR=path       use this binary instead of building
#                       `cargo build --release -p executor`
#   KEEP=1              keep the temp dir (logs)
# Needs: bash, python3, umoci, skopeo, docker-registry, curl, buildah,
# busybox-static. Run as root.

set -euo pipefail

RUNS=${RUNS:-3}
CASES=${CASES:-flask busybox20}
PUSH=${PUSH:-1}
TARGET_RATIO=${TARGET_RATIO:-0.1}
BENCH_CACHE=${BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/executor-bench}
BENCH_TMP=${BENCH_TMP:-${TMPDIR:-/tmp}}
KEEP=${KEEP:-0}

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

die() {
  echo "cache_vs_buildah: $*" >&2
  exit 2
}

for tool in python3 umoci skopeo docker-registry curl buildah; do
  command -v "$tool" >/dev/null || die "$tool is missing
hint: apt-get install -y umoci skopeo docker-registry curl python3 buildah"
done
for c in $CASES; do
  case $c in flask | busybox20) ;; *) die "unknown case $c (flask, busybox20)" ;; esac
done
case $PUSH in 0 | 1) ;; *) die "PUSH must be 0 or 1, not $PUSH" ;; esac

# --- the executor binary ------------------------------------------------------
# shellcheck source=tests/bench/common.sh
source "$repo/tests/bench/common.sh"
executor_binary

# --- a registry for the run -------------------------------------------------------
top=$(mktemp -d "$BENCH_TMP/cache-vs-buildah-XXXXXX")
registry_pid=
storages=()
driver=overlay

cleanup() {
  local s
  for s in "${storages[@]}"; do cleanup_buildah "$s"; done
  [[ -n $registry_pid ]] && kill "$registry_pid" 2>/dev/null
  if [[ $KEEP == 1 ]]; then echo "kept $top" >&2; else rm -rf "$top"; fi
}
trap cleanup EXIT

start_registry "$top"
# No registries.conf from the host for buildah: no short names, no mirrors;
# the run's registry is plain HTTP.
cat >"$top/registries.conf" <<EOF
unqualified-search-registries = []
[[registry]]
location = "$registry"
insecure = true
EOF
export REGISTRIES_CONFIG_PATH=$top/registries.conf

# Pick the buildah storage driver: overlay where it works, vfs otherwise.
pick_buildah_driver "$top/probe"

# --- the bases and contexts ---------------------------------------------------------
declare -A base_of
mkdir -p "$BENCH_CACHE"
if [[ " $CASES " == *" flask "* ]]; then
  debian_layout
  skopeo copy --quiet --dest-tls-verify=false "oci:$layout:plain" "docker://$registry/bench/debian:bookworm" ||
    die "pushing the Debian base failed"
  # The python base, made once per Debian base.
  python_layout=$BENCH_CACHE/python-oci-$(basename "$layout")
  if [[ ! -f $python_layout/.complete ]]; then
    echo "== making the python base with executor (once; needs the Debian mirror)" >&2
    rm -rf "$python_layout"
    ctx=$top/python-base
    mkdir -p "$ctx/ca-certificates"
    touch "$ctx/ca-certificates/.keep"
    # The CA certificates this machine trusts beyond Debian's (an
    # intercepting proxy's), for pip in the fills.
    cp /usr/local/share/ca-certificates/*.crt "$ctx/ca-certificates/" 2>/dev/null || true
    cat >"$ctx/Dockerfile" <<EOF
FROM $registry/bench/debian:bookworm
COPY ca-certificates/ /usr/local/share/ca-certificates/
RUN apt-get update && apt-get install -y python3 python3-pip
EOF
    "$EXECUTOR" build --context "$ctx" --no-push --destination localhost/python-base:bookworm \
      --insecure-registry "$registry" --cache-dir "$top/python-store" \
      --oci-layout-path "$python_layout" >"$top/python-base.log" 2>&1 || {
      tail -n 40 "$top/python-base.log" >&2
      rm -rf "$python_layout"
      die "building the python base failed"
    }
    rm -rf "$top/python-store"
    touch "$python_layout/.complete"
  fi
  skopeo copy --quiet --dest-tls-verify=false "oci:$python_layout:localhost/python-base:bookworm" \
    "docker://$registry/bench/python:bookworm" || die "pushing the python base failed"
  base_of[flask]=$registry/bench/python:bookworm
  mkdir -p "$top/flask" "$top/context/flask"
  cp -r "$repo/examples/flask-app/." "$top/context/flask/"
fi
if [[ " $CASES " == *" busybox20 "* ]]; then
  busybox_layout
  skopeo copy --quiet --dest-tls-verify=false "oci:$layout:latest" "docker://$registry/bench/busybox:latest" ||
    die "pushing the busybox base failed"
  base_of[busybox20]=$registry/bench/busybox:latest
  mkdir -p "$top/busybox20" "$top/context/busybox20"
  {
    echo 'ARG BASE'
    echo 'FROM $BASE'
    for i in $(seq 1 20); do
      echo "RUN mkdir -p /work/$i && head -c 262144 /dev/urandom > /work/$i/blob && echo step $i >> /work/log && echo more >> /work/$((i - 1))/note 2>/dev/null; touch /work/$i/note && rm -rf /work/$((i - 2))/blob"
    done
  } >"$top/context/busybox20/Dockerfile"
fi

# --- the builds ---------------------------------------------------------------------
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
log_offset() { stat -c %s "$top/registry.log"; }

# executor_build CASE NAME STORE: one executor build with the registry
# cache, pushing to bench/CASE/executor:NAME (or not, PUSH=0).
executor_build() {
  local c=$1 name=$2 store=$3
  local push=(--destination "$registry/bench/$c/executor:$name")
  [[ $PUSH == 1 ]] || push+=(--no-push)
  "$EXECUTOR" build --context "$top/context/$c" --cache=true \
    --cache-repo "$registry/bench/$c/executor-cache" --cache-dir "$store" \
    "${push[@]}" --insecure-registry "$registry" --build-arg "BASE=${base_of[$c]}" \
    --metrics-file "$top/$c/executor-$name.json" >"$top/$c/executor-$name.log" 2>&1 || {
    tail -n 40 "$top/$c/executor-$name.log" >&2
    die "executor build failed ($c, $name; KEEP=1 keeps the logs)"
  }
}

# buildah_build CASE NAME STORAGE [--cache-from REPO]: one buildah build
# writing its cache, then its push (PUSH=1).
buildah_build() {
  local c=$1 name=$2 storage=$3
  shift 3
  storages+=("$storage")
  local bh=(buildah --root "$storage/root" --runroot "$storage/run" --storage-driver "$driver")
  local tag=$registry/bench/$c/buildah:$name
  "${bh[@]}" bud --isolation=chroot --format docker --layers --tls-verify=false \
    --cache-to "$registry/bench/$c/buildah-cache" "$@" \
    --build-arg "BASE=${base_of[$c]}" -t "$tag" \
    -f "$top/context/$c/Dockerfile" "$top/context/$c" >"$top/$c/buildah-$name.log" 2>&1 || {
    tail -n 40 "$top/$c/buildah-$name.log" >&2
    die "buildah bud failed ($c, $name, storage driver $driver)"
  }
  if [[ $PUSH == 1 ]]; then
    "${bh[@]}" push --tls-verify=false "$tag" >>"$top/$c/buildah-$name.log" 2>&1 || {
      tail -n 40 "$top/$c/buildah-$name.log" >&2
      die "buildah push failed ($c, $name)"
    }
  fi
}

# metrics FILE: "CACHED/STEPS" from an executor metrics file.
metrics() {
  python3 -c 'import json, sys; m = json.load(open(sys.argv[1])); print("%d/%d" % (m["steps_cached"], m["steps_cached"] + m["steps_executed"]))' "$1"
}

round() {
  local c=$1 n=$2 t0 t1 off
  local name=round-$n work=$top/$c/round-$n
  mkdir -p "$work"

  # Each timed build starts with the previous one's writes on disk.
  sync
  off=$(log_offset)
  t0=$(now)
  executor_build "$c" "$name" "$work/executor-store"
  t1=$(now)
  local exec_s exec_bytes exec_blobs cached
  exec_s=$(elapsed "$t0" "$t1")
  read -r exec_bytes exec_blobs < <(registry_layer_bytes "$top" "$off")
  cached=$(metrics "$top/$c/executor-$name.json")

  sync
  off=$(log_offset)
  t0=$(now)
  buildah_build "$c" "$name" "$work/buildah" --cache-from "$registry/bench/$c/buildah-cache"
  t1=$(now)
  local bh_s bh_bytes bh_blobs ratio
  bh_s=$(elapsed "$t0" "$t1")
  read -r bh_bytes bh_blobs < <(registry_layer_bytes "$top" "$off")
  ratio=$(awk -v e="$exec_s" -v b="$bh_s" 'BEGIN { printf "%.3f", e / b }')

  printf '%-9s round %d: executor %6ss (steps cached %s, layers downloaded %d B in %d blobs) | buildah %6ss (layers downloaded %d B in %d blobs) | executor/buildah %s\n' \
    "$c" "$n" "$exec_s" "$cached" "$exec_bytes" "$exec_blobs" "$bh_s" "$bh_bytes" "$bh_blobs" "$ratio"
  echo "$exec_s $exec_bytes $bh_s $bh_bytes $ratio $cached" >>"$top/$c/results"
  cleanup_buildah "$work/buildah"
  [[ $KEEP == 1 ]] || rm -rf "$work"
}

echo "== executor $EXECUTOR; buildah $(buildah --version 2>/dev/null | awk '{ print $3 }') (driver $driver); $(nproc) cores; cases $CASES; push $PUSH" >&2
for c in $CASES; do
  echo "== $c: filling each tool's registry cache once" >&2
  t0=$(now)
  executor_build "$c" fill "$top/$c/fill-executor-store"
  t1=$(now)
  buildah_build "$c" fill "$top/$c/fill-buildah"
  t2=$(now)
  echo "$c fill: executor $(elapsed "$t0" "$t1")s (steps cached $(metrics "$top/$c/executor-fill.json")), buildah $(elapsed "$t1" "$t2")s" >&2
  cleanup_buildah "$top/$c/fill-buildah"
  [[ $KEEP == 1 ]] || rm -rf "$top/$c/fill-buildah" "$top/$c/fill-executor-store"
  for ((i = 1; i <= RUNS; i++)); do
    round "$c" "$i"
  done
done

# --- summary --------------------------------------------------------------------
status=0
for c in $CASES; do
  awk -v c="$c" -v target="$TARGET_RATIO" '
    { e[NR] = $1; eb[NR] = $2; b[NR] = $3; bb[NR] = $4; r[NR] = $5
      split($6, s, "/"); if (s[1] != s[2]) missed++
      if ($2 > 0) bytes++ }
    function median(a, n,   i, j, t) {
      for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
      return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    END {
      n = NR
      ratio = median(r, n)
      printf "%-9s median of %d: executor %.2fs | buildah %.2fs | executor/buildah %.3f | layer bytes downloaded: executor %d, buildah %d\n",
        c, n, median(e, n), median(b, n), ratio, median(eb, n), median(bb, n)
      if (ratio >= target || bytes > 0 || missed > 0) {
        printf "%-9s MISSED the target: executor/buildah under %s, zero layer bytes and every step cached in every round (%d rounds with layer bytes, %d with misses)\n",
          c, target, bytes, missed
        exit 1
      }
    }' "$top/$c/results" || status=1
done
exit "$status"
