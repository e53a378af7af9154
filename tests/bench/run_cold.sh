#!/usr/bin/env bash
# run_cold.sh: how fast, and how lean, is a cold build with RUN steps?
#
# Two Dockerfiles, each built cold (empty stores) by executor (release
# build) and by `buildah bud --isolation=chroot --layers`, in the same run;
# prints both wall times, their ratio, CPU times and peak RSS, and the
# medians over RUNS rounds. Exits 2 on a setup or build failure.
#
#   tests/bench/run_cold.sh                    # three rounds of each
#   RUNS=1 CASES=busybox20 tests/bench/run_cold.sh
#
# The cases:
#   apt        the Debian apt example, on the Debian base image
#              (debootstrap minbase bookworm, from the tarball
#              tests/fixtures/debian-base.sh prints):
#                FROM base
#                RUN apt-get update && apt-get install -y python3 python3-pip
#              Needs the Debian package mirror (the base's sources.list),
#              reached by both tools with the host's network; the download
#              is part of what is timed, for both.
#   busybox20  20 RUN steps on the busybox image the tests use (Debian's
#              busybox-static): each makes a directory with a 256 KiB file
#              and a log line, appends to the previous step's file and
#              removes the one before it, so every layer adds, changes and
#              deletes.
# The bases are made once (umoci) and reused from the cache dir, pushed to a
# docker-registry started on a free 127.0.0.1 port for the run, and pulled
# from there by both tools.
#
# What is timed, per round (both tools start with empty storage):
#   executor  `executor build --no-push` with a fresh --cache-dir: pull,
#             extract, run, snapshot, compress every layer into its store.
#   buildah   `buildah bud --isolation=chroot --layers --format docker` into
#             a private store (--root/--runroot in the temp dir, overlay
#             driver, vfs if overlay cannot be used): pull, run, commit
#             every layer into its store (uncompressed: buildah compresses
#             at push time, which is not timed).
# Peak RSS and CPU time (user + system, children included) come from
# `/usr/bin/time -v` (package `time`). The peak RSS is that of the largest
# single process of the tree, which in the apt case may be apt or dpkg
# rather than the builder.
#
# Settings (environment):
#   RUNS=3              rounds per case
#   CASES="apt busybox20"
#   DEBIAN_TARBALL=path the rootfs tarball (default: what
#                       tests/fixtures/debian-base.sh prints, which keeps it
#                       under $EXECUTOR_FIXTURES or target/e2e-fixtures)
#   BENCH_CACHE=~/.cache/executor-bench   where the bases' layouts live
#   BENCH_TMP=/tmp      where each round's stores go
#   EXECUTOR=path       use this binary instead of building
#                       `cargo build --release -p executor`
#   BUILDAH=0           skip buildah (executor figures only)
#   KEEP=1              keep the temp dir (logs)
# Needs: bash, python3, umoci, skopeo, docker-registry, curl, buildah,
# busybox-static, GNU time. Run as root.

set -euo pipefail

RUNS=${RUNS:-3}
CASES=${CASES:-apt busybox20}
BENCH_CACHE=${BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/executor-bench}
BENCH_TMP=${BENCH_TMP:-${TMPDIR:-/tmp}}
BUILDAH=${BUILDAH:-1}
KEEP=${KEEP:-0}

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

die() {
  echo "run_cold: $*" >&2
  exit 2
}

[[ -x /usr/bin/time ]] || die "GNU time is missing
hint: apt-get install -y time"
for tool in python3 umoci skopeo docker-registry curl; do
  command -v "$tool" >/dev/null || die "$tool is missing
hint: apt-get install -y umoci skopeo docker-registry curl python3"
done
if [[ $BUILDAH == 1 ]]; then
  command -v buildah >/dev/null || die "buildah is missing
hint: apt-get install -y buildah, or BUILDAH=0 for executor alone"
fi
for c in $CASES; do
  case $c in apt | busybox20) ;; *) die "unknown case $c (apt, busybox20)" ;; esac
done

# --- the executor binary ------------------------------------------------------
# shellcheck source=tests/bench/common.sh
source "$repo/tests/bench/common.sh"
executor_binary

# --- the bases, made once -------------------------------------------------------
mkdir -p "$BENCH_CACHE"
declare -A layout_of
if [[ " $CASES " == *" apt "* ]]; then
  debian_layout
  layout_of[apt]=$layout:plain
fi
if [[ " $CASES " == *" busybox20 "* ]]; then
  busybox_layout
  layout_of[busybox20]=$layout:latest
fi

# --- a registry for the run, and the contexts -------------------------------------
top=$(mktemp -d "$BENCH_TMP/run-cold-XXXXXX")
registry_pid=
work=

finish_round() {
  [[ -n $work ]] || return 0
  cleanup_buildah "$work/buildah"
  [[ $KEEP == 1 ]] || rm -rf "$work/buildah" "$work/executor-store"
  work=
}

cleanup() {
  finish_round
  [[ -n $registry_pid ]] && kill "$registry_pid" 2>/dev/null
  if [[ $KEEP == 1 ]]; then echo "kept $top" >&2; else rm -rf "$top"; fi
}
trap cleanup EXIT

start_registry "$top"
# No registries.conf from the host for buildah: no short names, no mirrors.
printf 'unqualified-search-registries = []\n' >"$top/registries.conf"
export REGISTRIES_CONFIG_PATH=$top/registries.conf

for c in $CASES; do
  skopeo copy --quiet --dest-tls-verify=false "oci:${layout_of[$c]}" "docker://$registry/bench/$c:base" ||
    die "pushing the $c base failed"
  mkdir -p "$top/$c"
  {
    echo 'ARG BASE'
    echo 'FROM $BASE'
    if [[ $c == apt ]]; then
      echo 'RUN apt-get update && apt-get install -y python3 python3-pip'
    else
      for i in $(seq 1 20); do
        echo "RUN mkdir -p /work/$i && head -c 262144 /dev/urandom > /work/$i/blob && echo step $i >> /work/log && echo more >> /work/$((i - 1))/note 2>/dev/null; touch /work/$i/note && rm -rf /work/$((i - 2))/blob"
      done
    fi
  } >"$top/$c/Dockerfile"
done

# Pick the buildah storage driver: overlay where it works, vfs otherwise.
driver=overlay
if [[ $BUILDAH == 1 ]]; then
  pick_buildah_driver "$top/probe"
fi

# --- one round ------------------------------------------------------------------
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
rss_of() { awk -F': ' '/Maximum resident set size/ { print $2 }' "$1"; }
cpu_of() { awk -F': ' '/(User|System) time/ { s += $2 } END { printf "%.1f", s }' "$1"; }

round() {
  local c=$1 n=$2 t0 t1
  work=$top/$c/round-$n
  mkdir -p "$work"
  local base=$registry/bench/$c:base

  t0=$(now)
  if ! /usr/bin/time -v -o "$work/executor.time" "$EXECUTOR" build \
    --context "$top/$c" --no-push --destination "localhost/run-cold-$c:bench" \
    --insecure-registry "$registry" --cache-dir "$work/executor-store" \
    --build-arg "BASE=$base" >"$work/executor.log" 2>&1; then
    tail -n 40 "$work/executor.log" >&2
    die "executor build failed ($c, round $n; log $work/executor.log, KEEP=1 keeps it)"
  fi
  t1=$(now)
  local exec_s exec_rss exec_cpu
  exec_s=$(elapsed "$t0" "$t1")
  exec_rss=$(rss_of "$work/executor.time")
  exec_cpu=$(cpu_of "$work/executor.time")

  local bh_s="-" bh_rss=0 bh_cpu="-" ratio="-"
  if [[ $BUILDAH == 1 ]]; then
    t0=$(now)
    if ! /usr/bin/time -v -o "$work/buildah.time" \
      buildah --root "$work/buildah/root" --runroot "$work/buildah/run" --storage-driver "$driver" \
      bud --isolation=chroot --layers --format docker --tls-verify=false \
      --build-arg "BASE=$base" -t "localhost/run-cold-$c:bench" \
      -f "$top/$c/Dockerfile" "$top/$c" >"$work/buildah.log" 2>&1; then
      tail -n 40 "$work/buildah.log" >&2
      die "buildah bud failed ($c, round $n, storage driver $driver)"
    fi
    t1=$(now)
    bh_s=$(elapsed "$t0" "$t1")
    bh_rss=$(rss_of "$work/buildah.time")
    bh_cpu=$(cpu_of "$work/buildah.time")
    ratio=$(awk -v e="$exec_s" -v b="$bh_s" 'BEGIN { printf "%.2f", e / b }')
  fi
  printf '%-9s round %d: executor %7ss (cpu %ss, peak RSS %d MiB) | buildah %7ss (cpu %ss, peak RSS %d MiB) | executor/buildah %s\n' \
    "$c" "$n" "$exec_s" "$exec_cpu" $((exec_rss / 1024)) "$bh_s" "$bh_cpu" $((bh_rss / 1024)) "$ratio"
  echo "$exec_s $exec_rss $bh_s $bh_rss $ratio" >>"$top/$c/results"
  finish_round
}

echo "== executor $EXECUTOR; buildah $(buildah --version 2>/dev/null | awk '{ print $3 }') (driver $driver); $(nproc) cores; cases $CASES" >&2
for c in $CASES; do
  for ((i = 1; i <= RUNS; i++)); do
    round "$c" "$i"
  done
done

# --- summary --------------------------------------------------------------------
for c in $CASES; do
  awk -v c="$c" '
    { e[NR] = $1; b[NR] = $3; r[NR] = $5; if ($2 > em) em = $2; if ($4 > bm) bm = $4 }
    function median(a, n,   i, j, t) {
      for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
      return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    END {
      n = NR
      printf "%-9s median of %d: executor %.2fs | buildah %s | executor/buildah %s | max peak RSS executor %d MiB, buildah %d MiB\n",
        c, n, median(e, n), (b[1] == "-" ? "-" : sprintf("%.2fs", median(b, n))),
        (r[1] == "-" ? "-" : sprintf("%.2f", median(r, n))), em / 1024, bm / 1024
    }' "$top/$c/results"
done
