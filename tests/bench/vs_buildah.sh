#!/usr/bin/env bash
# vs_buildah.sh: executor against buildah, side by side in one run, on the
# cases issue 18 sets aims for; prints one table (medians, ratios, peak RSS,
# layer bytes downloaded). A benchmark, not a test: it asserts no time.
#
#   tests/bench/vs_buildah.sh                       # the four aims, 5 rounds
#   tests/bench/vs_buildah.sh --runs 3 --cases "cold warm"
#   tests/bench/vs_buildah.sh --debian              # + apt and flask (network)
#
# The cases (each tool starts every timed round on empty local storage;
# buildah is `buildah --isolation=chroot --format docker` with a private
# --root/--runroot, overlay driver where it works here, else vfs):
#   cold     20 RUN steps on the tests' busybox image, pulled from a local
#            registry: each writes a 256 KiB random file and a log line,
#            appends to the previous step's file and removes an older one,
#            so every layer adds, changes and deletes.
#              executor build --no-push, fresh --cache-dir
#              buildah bud --layers
#   warm     the same Dockerfile rebuilt without change from each tool's
#            registry cache (filled once, untimed), then pushed:
#              executor build --cache=true --cache-repo R -d IMAGE
#              buildah bud --layers --cache-from R --cache-to R; buildah push
#            Layer bytes downloaded are read from the registry's access log
#            (common.sh registry_layer_bytes): an aim is 0.
#   copy     FROM scratch, COPY . /data/ of 10,000 files, 500 MiB (made
#            once, deterministic; `gzip -6` makes it 72%), to an OCI layout:
#              executor build --no-push --oci-layout-path OUT
#              buildah bud --layers=false; buildah push IMG oci:OUT (what
#              gzips the layer: bud stores it uncompressed)
#            The layer's digest must be the same every round.
#   big      the copy case's shape with one 2 GiB file (peak RSS aim)
#   many     the copy case's shape with 100,000 files of 0-2 KiB (peak RSS)
#   apt      (--debian) FROM the tests' Debian base, RUN apt-get update &&
#            apt-get install -y python3 python3-pip; cold as `cold`. Needs
#            the Debian mirror; the download is timed, for both.
#   flask    (--debian) examples/flask-app rebuilt as `warm`, on a python
#            base made once by executor (needs the Debian mirror; the fills
#            need PyPI, the timed rounds nothing).
# Peak RSS is the largest single process of the tool's tree (GNU time -v;
# buildah's is the larger of bud and push); CPU is user + system. The ratio
# column is the median of the rounds' executor/buildah ratios.
#
# Options (or the environment variables in brackets):
#   --runs N           rounds of cold, warm, copy, apt, flask [RUNS=5]
#   --memory-runs N    rounds of big and many [MEMORY_RUNS=1]
#   --cases "LIST"     [CASES="cold warm copy big many"]
#   --debian           adds apt and flask to the cases
#   --keep             keep the temp dir with every log [KEEP=1]
#   [EXECUTOR=path]    this binary instead of `cargo build --release -p executor`
#   [BENCH_CACHE=~/.cache/executor-bench]  generated contexts and bases
#   [BENCH_FS=image]   where stores, outputs and the registry live: `image`,
#                      a journaled ext4 (mkfs.ext4's defaults) in a sparse
#                      image file under BENCH_CACHE, loop-mounted (direct I/O) for the
#                      run and removed after; `host`, BENCH_TMP as it is
#   [BENCH_TMP=/tmp]   with BENCH_FS=host
#   [DEBIAN_TARBALL=path]  the Debian rootfs (default: tests/fixtures/debian-base.sh)
# Measured 2026-12-07 08:03-08:09 UTC on the 2-core development machine,
# nothing else of mine running, load ~1.4 from the host (release build of
# main 83574f5; `tests/bench/vs_buildah.sh --runs 5 --memory-runs 1`,
# stores on the journaled ext4 image, its loop device doing direct I/O):
#   case                        executor s (cpu)  buildah s (cpu)  ratio  aim
#   cold, 20 RUN (5 rounds)     0.14 (0.1)         4.89 (4.9)      0.029  <= 0.03
#   warm + push (5 rounds)      0.07 (0.0)         1.51 (1.2)      0.044  <= 0.05, 0 B: 0 B
#   COPY 10,000 files (5)       2.06 (3.5)        10.52 (14.8)     0.195  <= 0.2
#   one 2 GiB file (1)          7.09 (12.3)       35.88 (46.3)     0.198  RSS 23 MiB
#   100,000 files (1)           1.90 (2.5)        25.63 (40.0)     0.074  RSS 108 MiB
# Rounds: cold 0.035, 0.032, 0.029, 0.027, 0.027; warm 0.045, 0.044,
# 0.041, 0.043, 0.046; COPY 0.197, 0.191, 0.195, 0.198, 0.194. Right
# after, `--cases cold --runs 7` twice: 0.029 (rounds 0.026 to 0.034) and
# 0.030 (0.027 to 0.033), executor 0.13-0.14 s against buildah 4.4-4.6 s.
# The session before (05:32, 7dcc519, the same command): cold 0.029, warm
# 0.043, COPY 0.195, 2 GiB 7.35 s against 41.26 s (RSS 23 MiB), 100,000
# files 1.93 s against 25.71 s (RSS 107 MiB); with ccc7b34, 06:12-06:14,
# `--cases "cold warm" --runs 7` then `--cases cold --runs 7` twice: cold
# 0.031, 0.030, 0.030 (rounds 0.028 to 0.035). The cold ratio sits at the
# aim: a round's ratio moves by a tenth with buildah's time alone.
# Two sessions before (03:12, c835d2f, the same command):
#   cold 0.032 (0.15 s against 5.11 s), warm 0.044, COPY 0.197, 2 GiB
#   7.56 s against 37.70 s (RSS 23 MiB), 100,000 files 1.97 s against
#   27.62 s (RSS 107 MiB).
# Rounds: cold 0.028, 0.033, 0.029, 0.037, 0.032; warm 0.044, 0.051,
# 0.044, 0.048, 0.043; COPY 0.185, 0.197, 0.199, 0.198, 0.187. Right
# after, `--cases cold --runs 7`: 0.031 (0.17 s against 5.36 s; rounds
# 0.028 to 0.033). An hour before (8a7665c, before the layer writer kept
# its first blocks on its own thread): cold 0.031, warm 0.046, COPY 0.193.
# The session before (00:27, 04cd35e): cold 0.036 (0.16 s against 4.66 s),
# warm 0.045, COPY 0.200, 2 GiB 7.17 s, 100,000 files 1.84 s.
# Its rounds: cold 0.038, 0.036, 0.033, 0.036, 0.032; warm 0.051, 0.050,
# 0.040, 0.045, 0.042; COPY 0.200, 0.194, 0.195, 0.207, 0.206. The run
# before it (23:44, cb1fff5, the same but for how writeback is started):
# cold 0.035, warm 0.046, COPY 0.200 (rounds 0.200, 0.205, 0.254 with
# executor's CPU at 4.2 s instead of 3.4, 0.195, 0.198), 2 GiB 7.18 s
# against 31.82 s. COPY then sat at the aim, rounds on both sides of it.
# Before the loop device did direct I/O (the same day, 21:53, 7ccea79):
# cold 0.036, warm 0.047, COPY 0.250 (2.70 s against 10.97 s), 2 GiB
# 14.06 s against 44.41 s, 100,000 files 3.06 s against 27.21 s. On
# BENCH_FS=host (this machine's ext4 without a journal) buildah's COPY
# slowed round after round (12.5 to 27.5 s) after each previous round's
# removal: much of its time there was the disk's
# (skipping freed inodes, discards), which is why the bench makes its own
# file system. Earlier the same day, on the host disk: cold 0.24 s against
# 4.89 s (0.050) and warm 0.06 s against 1.51 s (0.041) at 90eacd6; cold
# 0.35 s (0.057) and warm 0.10 s (0.059) at c547566; cold 0.50 s (0.092)
# and warm 0.16 s (0.070) at 1575ea2.
# Where the time goes. Warm: 49 registry requests (the ping, the push
# check, the base's manifest and config, one manifest per cache key with
# its entry embedded, one mount per layer made while the keys are looked
# up, the manifest); Debian's docker-registry spends ~0.8 ms of CPU per
# request however many are in flight, which is most of the 60 ms.
# Cold, 0.13-0.14 s (ccc7b34; phases from bpftrace on exec and exit,
# medians of 10 builds): from the start to the first RUN's exec ~29 ms
# (~3 ms to start the process; a new store's oci-layout and empty
# index.json written unsynced; the isolation probe, which also makes the
# sandboxes' template mount namespace, runs meanwhile; the auth challenge
# and the manifest side by side, then the 1 MiB blob's and the config's
# GETs, the blob's first byte 4-5 ms after its request from Debian's
# registry; the blob's fsync ~1.5 ms; busybox extracted in ~9.8 ms:
# inflated whole by libdeflate ~4 ms, its diffID hashed meanwhile, 268
# symlinks ~4 ms on journaled ext4 at two calls each: a C loop of bare
# symlinkat calls on the same file system takes 13-15 us each). Then a
# step is ~4.7 ms: the commands ~2.85 ms (sh, head's 256 KiB of
# /dev/urandom in 4 KiB reads, its CPU the kernel's ChaCha, mkdir, touch,
# rm, busybox forking its applets without exec, through an overlay of up
# to 21 lowers; the same script in a plain chroot of the base, started from
# Python, takes 3.0 ms, its spawn and chroot's exec included); the sandbox's
# set-up, clone to exec, ~0.8 ms (the PID, IPC and UTS namespaces; a copy
# of the template, the root attached and moved over /, so nothing is
# unmounted; ~28 mount calls, five of them new superblocks: /proc, /sys,
# /dev, devpts, /dev/shm; the seccomp filter's JIT ~0.1 ms; exec); the
# reap ~0.18 ms; between steps ~1.0 ms (the upper directory's walks, the
# next overlay mount ~0.3 ms, most of it overlayfs checking its work
# directory on journaled ext4; the next sandbox prepared). The layer writer
# runs on the other core. The end ~5 ms: the last layer written and synced,
# the config and manifest, the tag's index.json, three commits in a row.
# On one CPU (taskset -c 0) the build takes 152 ms against 141 on two: the
# work is one chain; the second core takes the layer writer.
# Floors under the rest (08:00 session, 83574f5): the process spends 2.1 ms
# from exec to Rust's main (ld.so, 516 page faults, OpenSSL's and
# aws-lc's CPU probing at 3.8 us a CPUID in this VM); a non-PIE build
# saves 0.56 ms of it (175 fewer faults) at the cost of the binary's ASLR,
# and fat LTO with one codegen unit nothing measurable (140.0 against
# 138.5 ms, 20 builds each): both left out. The kernel takes ~0.8 ms from
# the process's exit to its parent's SIGCHLD. A sandbox's pid 1 makes
# ~120 system calls before its exec (28 mounts, the signals reset, the
# bounding set's 28 drops, the seccomp filter's JIT); the overlay's mount
# ~0.3 ms and the previous one's unmount ~0.25 ms (waited for) sit
# between steps. Storing the base's config and manifest side by side, and
# not spawning the per-step cancel watcher, each measured within noise.
# COPY (a build without RUN): the layer is written straight from the context
# files, each read once (no staging copy, no inode made per file, no
# extracted copy of the layer unless a RUN later needs the root), and its
# blob is hard-linked into the OCI layout. Each 128 KiB gzip block is
# judged in 8 KiB granules and only those deflate can shrink are deflated
# (layer/blocks.rs: 4.2 -> 3.6 s of CPU against judging whole blocks);
# the blob is handed to writeback as it is written, so its fsync waits
# for the last 8 MiB (0.29 s less at the end). Of the 3.4 s of CPU:
# libdeflate's level-6 deflate 43%, sha256 (diffID and digest, SHA-NI, at
# the 2 GB/s OpenSSL and ring also reach) 19%, the granules' judging 17%,
# the kernel ~15% (reading the files); the first 0.11 s (walking and
# stating the 10,000 files, making the 600 directories of the staging
# tree) runs on one core, then the wall time is the CPU time over two
# cores. Lower needs a lower level than the default.
#
# Exits 1 when a correctness check fails (layer bytes downloaded on a warm
# rebuild, a step not cached, a copy layer digest that changed between
# rounds), 2 on a setup or build failure. Needs (Debian packages): buildah
# skopeo umoci docker-registry curl python3 time busybox-static e2fsprogs.
# Run as root (BENCH_FS=image loop-mounts its file system).

set -euo pipefail

RUNS=${RUNS:-5}
MEMORY_RUNS=${MEMORY_RUNS:-1}
CASES=${CASES:-cold warm copy big many}
KEEP=${KEEP:-0}
BENCH_CACHE=${BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/executor-bench}
BENCH_TMP=${BENCH_TMP:-${TMPDIR:-/tmp}}
BENCH_FS=${BENCH_FS:-image}

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

die() {
  echo "vs_buildah: $*" >&2
  exit 2
}

while (($#)); do
  case $1 in
    --runs) RUNS=${2:?--runs needs a number} && shift ;;
    --memory-runs) MEMORY_RUNS=${2:?--memory-runs needs a number} && shift ;;
    --cases) CASES=${2:?--cases needs a list} && shift ;;
    --debian) CASES="$CASES apt flask" ;;
    --keep) KEEP=1 ;;
    -h | --help)
      sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
      exit 0
      ;;
    *) die "unknown argument $1 (--help lists them)" ;;
  esac
  shift
done
for c in $CASES; do
  case $c in cold | warm | copy | big | many | apt | flask) ;; *) die "unknown case $c (cold warm copy big many apt flask)" ;; esac
done
has_case() { [[ " $CASES " == *" $1 "* ]]; }

[[ -x /usr/bin/time ]] || die "GNU time is missing
hint: apt-get install -y time"
for tool in python3 umoci skopeo docker-registry curl buildah; do
  command -v "$tool" >/dev/null || die "$tool is missing
hint: apt-get install -y buildah skopeo umoci docker-registry curl python3 time busybox-static"
done

# shellcheck source=tests/bench/common.sh
source "$repo/tests/bench/common.sh"
executor_binary

# This machine's own disk is an ext4 without a journal, mounted with
# `discard`: each file removed waits for the device's discard, and inodes
# freed in the last five minutes are skipped, one by one, by the next
# allocations (see "On ext4 without a journal" below). Neither is what a CI
# runner's disk does, and both slow whichever tool runs after a removal:
# by default the stores live on a journaled ext4 of mkfs.ext4's defaults,
# made for the run in a sparse image file (16 GiB at most; the big case
# writes about 7). Its loop device does direct I/O, as a disk does: what
# is written goes to the disk, not into the host's page cache as the image
# file's dirty pages, which an fsync in the image would then flush all of
# (446 MB for the copy case's layer, after it was written: 0.29 s).
fs_image= fs_mount= fs_loop=
case $BENCH_FS in
  image)
    fs_image=$BENCH_CACHE/bench-fs.img
    fs_mount=$(mktemp -d "${TMPDIR:-/tmp}/executor-bench-fs-XXXXXX")
    mkdir -p "$BENCH_CACHE"
    rm -f "$fs_image"
    truncate -s 16G "$fs_image"
    mkfs.ext4 -q -F "$fs_image" || die "cannot make the bench's file system in $fs_image"
    fs_loop=$(losetup --find --show --direct-io=on "$fs_image") ||
      die "cannot attach $fs_image to a loop device (BENCH_FS=host uses BENCH_TMP as it is)"
    mount "$fs_loop" "$fs_mount" || {
      losetup -d "$fs_loop"
      die "cannot mount $fs_loop ($fs_image)"
    }
    BENCH_TMP=$fs_mount
    ;;
  host) ;;
  *) die "BENCH_FS is image or host, not $BENCH_FS" ;;
esac

top=$(mktemp -d "$BENCH_TMP/vs-buildah-XXXXXX")
registry_pid=
storages=()
driver=overlay

cleanup() {
  local s
  for s in "${storages[@]}"; do cleanup_buildah "$s"; done
  [[ -n $registry_pid ]] && kill "$registry_pid" 2>/dev/null
  if [[ $KEEP == 1 ]]; then echo "kept $top" >&2; else rm -rf "$top"; fi
  if [[ -n $fs_mount ]]; then
    if [[ $KEEP == 1 ]]; then
      echo "the bench's file system stays mounted at $fs_mount ($fs_image)" >&2
    else
      umount "$fs_mount" && losetup -d "$fs_loop" && rmdir "$fs_mount" && rm -f "$fs_image"
    fi
  fi
}
trap cleanup EXIT

pick_buildah_driver "$top/probe"

# --- measuring ------------------------------------------------------------------

# The wall clock is read from bash's own $EPOCHREALTIME, around GNU time
# alone: a `date` run on either side (a fork and an exec each) added 1.5 ms
# to every round, which weighed on executor's 0.13 s and not on buildah's
# 4 s. The decimal separator is the locale's.

# timed NAME CMD...: runs CMD under GNU time into $work/NAME.time, its
# output into $work/NAME.log; appends its wall seconds to $work/NAME.wall.
# On failure prints the log's end and dies, except for one transient of
# buildah 1.28 on this kernel: a RUN step now and then fails with "sealing
# memfd copy: Device or resource busy" (buildah seals a memfd copy of
# itself, and the kernel refuses while something holds a page of it). The
# build (NAME buildah) then runs once more from empty storage
# ($buildah_storage, removed first); the failed attempt's time is dropped.
timed() {
  local name=$1 t0 t1 attempt
  shift
  for attempt in 1 2; do
    t0=${EPOCHREALTIME/,/.}
    if /usr/bin/time -v -o "$work/$name.time" "$@" >>"$work/$name.log" 2>&1; then
      t1=${EPOCHREALTIME/,/.}
      awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }' >>"$work/$name.wall"
      return 0
    fi
    if [[ $attempt == 1 && $name == buildah && -n ${buildah_storage:-} ]] &&
      tail -n 20 "$work/$name.log" | grep -q 'sealing memfd copy: Device or resource busy'; then
      echo "vs_buildah: buildah could not seal its memfd copy (a transient); building again from empty storage" >&2
      cleanup_buildah "$buildah_storage"
      rm -rf "$buildah_storage"
      removed
      continue
    fi
    break
  done
  tail -n 40 "$work/$name.log" >&2
  die "$name failed: $* (KEEP=1 keeps $work)"
}

# The sum of NAME's wall seconds, its peak RSS (KiB) and CPU seconds, for
# the timed() calls under $work whose names are given.
sum_wall() {
  local f
  for f in "$@"; do cat "$work/$f"; done | awk '{ s += $1 } END { printf "%.3f", s }'
}
peak_rss() {
  local f
  for f in "$@"; do awk -F': ' '/Maximum resident set size/ { print $2 }' "$work/$f.time"; done |
    sort -n | tail -n 1
}
cpu_of() {
  local f
  for f in "$@"; do awk -F': ' '/(User|System) time/ { s += $2 } END { print s }' "$work/$f.time"; done |
    awk '{ s += $1 } END { printf "%.1f", s }'
}

# record CASE EXEC_S EXEC_RSS EXEC_CPU EXEC_BYTES BH_S BH_RSS BH_CPU BH_BYTES CHECK
# CHECK is what the round must agree on (a digest) or "ok"/"FAIL:why".
record() {
  local c=$1
  shift
  echo "$*" >>"$top/results-$c"
  awk -v c="$c" '{ printf "%-6s executor %7.2fs (cpu %5.1fs, %4d MiB, %d layer B) | buildah %7.2fs (cpu %5.1fs, %4d MiB, %d layer B) | %.3f %s\n",
    c, $1, $3, $2 / 1024, $4, $5, $7, $6 / 1024, $8, $1 / $5, $9 }' <<<"$*" >&2
}

# --- the registry and the bases --------------------------------------------------

# push_base LAYOUT:TAG NAME: the base image into the run's registry as
# bench/NAME.
push_base() {
  skopeo copy --quiet --dest-tls-verify=false "oci:$1" "docker://$registry/bench/$2" ||
    die "pushing the $2 base failed"
}

declare -A base_of
if has_case cold || has_case warm || has_case apt || has_case flask; then
  start_registry "$top"
  # No registries.conf from the host for buildah: no short names, no
  # mirrors; the run's registry is plain HTTP.
  cat >"$top/registries.conf" <<EOF
unqualified-search-registries = []
[[registry]]
location = "$registry"
insecure = true
EOF
  export REGISTRIES_CONFIG_PATH=$top/registries.conf
fi
if has_case cold || has_case warm; then
  busybox_layout
  push_base "$layout:latest" busybox:latest
  base_of[busybox20]=$registry/bench/busybox:latest
  mkdir -p "$top/context/busybox20"
  {
    echo 'ARG BASE'
    echo 'FROM $BASE'
    for i in $(seq 1 20); do
      echo "RUN mkdir -p /work/$i && head -c 262144 /dev/urandom > /work/$i/blob && echo step $i >> /work/log && echo more >> /work/$((i - 1))/note 2>/dev/null; touch /work/$i/note && rm -rf /work/$((i - 2))/blob"
    done
  } >"$top/context/busybox20/Dockerfile"
fi
if has_case apt || has_case flask; then
  debian_layout
  push_base "$layout:plain" debian:bookworm
  base_of[apt]=$registry/bench/debian:bookworm
  mkdir -p "$top/context/apt"
  printf 'ARG BASE\nFROM $BASE\nRUN apt-get update && apt-get install -y python3 python3-pip\n' >"$top/context/apt/Dockerfile"
fi
if has_case flask; then
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
    printf 'FROM %s\nCOPY ca-certificates/ /usr/local/share/ca-certificates/\nRUN apt-get update && apt-get install -y python3 python3-pip\n' \
      "$registry/bench/debian:bookworm" >"$ctx/Dockerfile"
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
  push_base "$python_layout:localhost/python-base:bookworm" python:bookworm
  base_of[flask]=$registry/bench/python:bookworm
  mkdir -p "$top/context/flask"
  cp -r "$repo/examples/flask-app/." "$top/context/flask/"
fi

# --- the generated contexts (made once under BENCH_CACHE) --------------------------

# generated_context NAME FILES MB: sets `context` to a directory of FILES
# files, MB MiB together, with a Dockerfile `FROM scratch` + `COPY . /data/`.
# FILES=1 is one file of MB MiB; otherwise ~600 nested directories (up to
# 6 deep) of small files (100 B to 256 KiB, log-uniform sizes; source-like
# text, random bytes, or runs of both) and FILES/400 large ones taking the
# rest. Deterministic (fixed seed). Plus two symlinks and an empty
# directory.
generated_context() {
  local name=$1 files=$2 mb=$3
  context=$BENCH_CACHE/$name
  [[ -f $context/.complete ]] && return 0
  echo "== generating $files files, $mb MiB into $context (once)" >&2
  rm -rf "$context"
  mkdir -p "$context"
  python3 - "$context" "$files" "$mb" <<'PY'
import os, random, sys

root, files, mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
total = mb * 1024 * 1024
rng = random.Random(20240601)
words = ("fn let mut impl struct enum match return self pub use mod crate where "
         "async await loop while for in if else const static type trait dyn "
         "Vec String Option Result Some None Ok Err Box Arc Path PathBuf io fs "
         "the of and to a is that it with as for on this be by from data file "
         "layer image build context copy tar gzip digest manifest config").split()

def text(n):
    out, size = [], 0
    while size < n:
        line = " " * (4 * rng.randrange(4)) + " ".join(
            rng.choice(words) for _ in range(rng.randrange(3, 14)))
        line += f" // {rng.getrandbits(32):08x}\n"
        out.append(line)
        size += len(line)
    return "".join(out).encode()[:n]

def content(n, kind):
    if kind == "text":
        return text(n)
    if kind == "random":
        return rng.randbytes(n)
    # mixed: alternating runs of random bytes and text
    parts, size = [], 0
    while size < n:
        run = min(n - size, rng.randrange(4096, 65536))
        parts.append(rng.randbytes(run) if rng.random() < 0.6 else text(run))
        size += run
    return b"".join(parts)

def big(path, size):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left:  # 1 MiB at a time: the generator stays small too
            n = min(left, 1 << 20)
            f.write(content(n, "mixed" if rng.random() < 0.5 else "random"))
            left -= n

if files == 1:
    big(os.path.join(root, "blobs", "large.bin"), total)
else:
    # Directory tree: top-level areas, packages, modules, some deeper.
    dirs = []
    for a in ["src", "assets", "vendor", "docs", "test-data", "build"]:
        for p in range(rng.randrange(6, 14)):
            for m in range(rng.randrange(3, 10)):
                d = f"{a}/pkg{p:02d}/mod{m}"
                if rng.random() < 0.3:
                    d += f"/deep{rng.randrange(3)}/deeper"
                dirs.append(d)
    n_large = max(1, files // 400)
    n_small = files - n_large
    # 100 B..256 KiB, unless that leaves the large files nothing
    top = 2621.44 if total > files * 64 * 1024 else max(1.0, total / files / 200)
    small = [int(100 * (top ** rng.random())) for _ in range(n_small)]
    large = [rng.uniform(4, 40) for _ in range(n_large)]
    budget = total - sum(small)
    if budget <= 0:
        sys.exit("vs_buildah: MB is too small for FILES")
    large = [int(budget * x / sum(large)) for x in large]
    large[-1] += budget - sum(large)
    for i, size in enumerate(small):
        d = dirs[i % len(dirs)] if i % 7 else dirs[rng.randrange(len(dirs))]
        kind = rng.choices(["text", "random", "mixed"], [5, 3, 2])[0]
        ext = {"text": ".rs", "random": ".bin", "mixed": ".dat"}[kind]
        path = os.path.join(root, d, f"f{i:06d}{ext}")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(content(size, kind))
    for i, size in enumerate(large):
        big(os.path.join(root, "blobs", f"large{i:03d}.bin"), size)
    os.symlink("src", os.path.join(root, "link-to-src"))
    os.symlink("blobs/large000.bin", os.path.join(root, "link-to-large"))
os.makedirs(os.path.join(root, "empty-dir"))
with open(os.path.join(root, "Dockerfile"), "w") as f:
    f.write("FROM scratch\nCOPY . /data/\n")
with open(os.path.join(root, ".dockerignore"), "w") as f:
    f.write(".complete\n")
count = sum(len(fs) for _, _, fs in os.walk(root))
print(f"vs_buildah: generated {count} files", file=sys.stderr)
PY
  touch "$context/.complete"
}

declare -A context_of
if has_case copy; then
  generated_context copy-heavy-v2-10000f-500m 10000 500
  context_of[copy]=$context
fi
if has_case big; then
  generated_context one-file-v2-2048m 1 2048
  context_of[big]=$context
fi
if has_case many; then
  generated_context many-files-v2-100000f-100m 100000 100
  context_of[many]=$context
fi

# --- one round of each kind ---------------------------------------------------------

# On ext4 without a journal (this machine's disk), every inode allocated in
# the minutes after others were deleted first skips past the deleted ones
# (recently_deleted() in fs/ext4/ialloc.c: 5 s after the deletion, or 305 s
# while the inode table block is dirty, which the next allocations in it
# make it; a journaled ext4, or xfs, has no such wait). A cold round makes
# a thousand inodes in a fifth of a second: after the previous round's
# removal, 40% of its CPU time went to that skipping (perf: recently_deleted
# and the buffer lookups under it), even a minute later, and rounds took
# from 0.2 to 0.45 s. buildah's `rmi` after its rounds removed as much. So
# the rounds of the small cases (cold, warm, apt, flask) keep their files,
# buildah's images included, until a large case needs the space or the
# bench ends, and each case starts a minute after the last removal.
last_removal=$(date +%s)
removed() { last_removal=$(date +%s); }
# Rounds whose removal waits (see above), and the removal of them all.
deferred=()
defer_removal() { [[ $KEEP == 1 ]] || deferred+=("$@"); }
flush_removals() {
  ((${#deferred[@]})) || return 0
  local w
  for w in "${deferred[@]}"; do cleanup_buildah "$w/buildah"; done
  rm -rf "${deferred[@]}"
  deferred=()
  removed
}
no_journal() {
  local dev fstype journals
  read -r dev fstype < <(findmnt -n -o SOURCE,FSTYPE --target "$BENCH_TMP")
  # A journaled ext4 has its jbd2 entry, /proc/fs/jbd2/DEVICE-*.
  journals=$(compgen -G "/proc/fs/jbd2/$(basename "$dev")-*" || true)
  [[ $fstype == ext4 && -z $journals ]]
}
settle_disk=0
no_journal && settle_disk=1
settle() {
  ((settle_disk)) || return 0
  local wait=$((last_removal + 61 - $(date +%s)))
  if ((wait > 0)); then
    echo "== waiting ${wait}s for the disk to settle (ext4 without a journal)" >&2
    sleep "$wait"
  fi
}

# cold_round CASE N: executor and buildah build CASE's Dockerfile on empty
# storage, not pushed.
cold_round() {
  local c=$1 n=$2 ctx
  local src=$c
  [[ $c == cold ]] && src=busybox20
  ctx=$top/context/$src
  work=$top/$c/round-$n
  mkdir -p "$work"
  sync
  settle
  timed executor "$EXECUTOR" build --context "$ctx" --no-push \
    --destination "localhost/bench-$c:round$n" --insecure-registry "$registry" \
    --cache-dir "$work/executor-store" --build-arg "BASE=${base_of[$src]}"
  storages+=("$work/buildah")
  sync
  buildah_storage=$work/buildah
  timed buildah buildah --root "$work/buildah/root" --runroot "$work/buildah/run" \
    --storage-driver "$driver" bud --isolation=chroot --layers --format docker \
    --build-arg "BASE=${base_of[$src]}" -t "localhost/bench-$c:round$n" -f "$ctx/Dockerfile" "$ctx"
  record "$c" "$(sum_wall executor.wall)" "$(peak_rss executor)" "$(cpu_of executor)" 0 \
    "$(sum_wall buildah.wall)" "$(peak_rss buildah)" "$(cpu_of buildah)" 0 ok
  defer_removal "$work"
}

# executor_cached CASE NAME STORE: executor's build of CASE with its
# registry cache, pushed to bench/CASE/executor:NAME.
executor_cached() {
  local c=$1 name=$2 store=$3 src=$1
  [[ $c == warm ]] && src=busybox20
  timed executor "$EXECUTOR" build --context "$top/context/$src" --cache=true \
    --cache-repo "$registry/bench/$c/executor-cache" --cache-dir "$store" \
    --destination "$registry/bench/$c/executor:$name" --insecure-registry "$registry" \
    --build-arg "BASE=${base_of[$src]}" --metrics-file "$work/executor-metrics.json"
}

# buildah_cached CASE NAME STORAGE [--cache-from REPO]: buildah's build of
# CASE writing its registry cache (timed as buildah), then its push
# (timed as buildah-push).
buildah_cached() {
  local c=$1 name=$2 storage=$3 src=$1
  shift 3
  [[ $c == warm ]] && src=busybox20
  storages+=("$storage")
  buildah_storage=$storage
  local bh=(buildah --root "$storage/root" --runroot "$storage/run" --storage-driver "$driver")
  local tag=$registry/bench/$c/buildah:$name
  timed buildah "${bh[@]}" bud --isolation=chroot --format docker --layers --tls-verify=false \
    --cache-to "$registry/bench/$c/buildah-cache" "$@" \
    --build-arg "BASE=${base_of[$src]}" -t "$tag" \
    -f "$top/context/$src/Dockerfile" "$top/context/$src"
  timed buildah-push "${bh[@]}" push --tls-verify=false "$tag"
}

# warm_round CASE N: both tools rebuild CASE without change on empty
# storage from their registry cache and push it; the layer bytes each
# downloaded come from the registry's access log.
warm_round() {
  local c=$1 n=$2 off
  work=$top/$c/round-$n
  mkdir -p "$work"
  sync
  off=$(stat -c %s "$top/registry.log")
  executor_cached "$c" "round-$n" "$work/executor-store"
  local exec_bytes exec_blobs
  read -r exec_bytes exec_blobs < <(registry_layer_bytes "$top" "$off")
  local cached
  cached=$(python3 -c 'import json, sys; m = json.load(open(sys.argv[1])); print("%d/%d" % (m["steps_cached"], m["steps_cached"] + m["steps_executed"]))' "$work/executor-metrics.json")
  sync
  off=$(stat -c %s "$top/registry.log")
  buildah_cached "$c" "round-$n" "$work/buildah" --cache-from "$registry/bench/$c/buildah-cache"
  local bh_bytes bh_blobs
  read -r bh_bytes bh_blobs < <(registry_layer_bytes "$top" "$off")
  local check="cached=$cached"
  [[ ${cached%/*} == "${cached#*/}" && $exec_bytes == 0 ]] || check="FAIL:cached=$cached,layer-bytes=$exec_bytes"
  record "$c" "$(sum_wall executor.wall)" "$(peak_rss executor)" "$(cpu_of executor)" "$exec_bytes" \
    "$(sum_wall buildah.wall buildah-push.wall)" "$(peak_rss buildah buildah-push)" \
    "$(cpu_of buildah buildah-push)" "$bh_bytes" "$check"
  defer_removal "$work"
}

# warm_fill CASE: each tool fills its registry cache once (not timed).
warm_fill() {
  local c=$1
  work=$top/$c/fill
  mkdir -p "$work"
  echo "== $c: filling each tool's registry cache once" >&2
  executor_cached "$c" fill "$work/executor-store"
  buildah_cached "$c" fill "$work/buildah"
  defer_removal "$work"
}

# copy_round CASE N: both tools turn CASE's generated context into an
# image in an OCI layout; the check is the layer digest executor wrote.
copy_round() {
  local c=$1 n=$2 ctx=${context_of[$1]}
  work=$(mktemp -d "$BENCH_TMP/vs-buildah-$c-XXXXXX")
  # Both start from the page cache: the context was just made or read.
  tar -C "$ctx" -cf - . | cat >/dev/null
  sync
  timed executor "$EXECUTOR" build --context "$ctx" --dockerfile Dockerfile --no-push \
    --destination "localhost/bench-$c:bench" --cache-dir "$work/executor-store" \
    --oci-layout-path "$work/executor-out"
  local digest
  digest=$(python3 - "$work/executor-out" <<'PY'
import json, os, sys
top = sys.argv[1]
def blob(d):
    with open(os.path.join(top, "blobs", *d.split(":", 1))) as f:
        return json.load(f)
index = json.load(open(os.path.join(top, "index.json")))
print(blob(index["manifests"][0]["digest"])["layers"][-1]["digest"])
PY
  )
  rm -rf "$work/executor-store" "$work/executor-out"
  storages+=("$work/buildah")
  local bh=(buildah --root "$work/buildah/root" --runroot "$work/buildah/run" --storage-driver "$driver")
  sync
  buildah_storage=$work/buildah
  timed buildah "${bh[@]}" bud --isolation=chroot --format docker --layers=false \
    -t "localhost/bench-$c:bench" -f "$ctx/Dockerfile" "$ctx"
  timed buildah-push "${bh[@]}" push "localhost/bench-$c:bench" "oci:$work/buildah-out"
  record "$c" "$(sum_wall executor.wall)" "$(peak_rss executor)" "$(cpu_of executor)" 0 \
    "$(sum_wall buildah.wall buildah-push.wall)" "$(peak_rss buildah buildah-push)" \
    "$(cpu_of buildah buildah-push)" 0 "$digest"
  cleanup_buildah "$work/buildah"
  if [[ $KEEP == 1 ]]; then echo "kept $work" >&2; else rm -rf "$work"; fi
  removed
}

# --- the run --------------------------------------------------------------------------

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
echo "== executor $EXECUTOR; buildah $(buildah --version | awk '{ print $3 }') (driver $driver); $(nproc) cores; load $load_before; cases $CASES" >&2
for c in $CASES; do
  mkdir -p "$top/$c"
  case $c in copy | big | many) flush_removals ;; esac
  case $c in
    cold | apt) for ((i = 1; i <= RUNS; i++)); do cold_round "$c" "$i"; done ;;
    warm | flask)
      warm_fill "$c"
      for ((i = 1; i <= RUNS; i++)); do warm_round "$c" "$i"; done
      ;;
    copy) for ((i = 1; i <= RUNS; i++)); do copy_round "$c" "$i"; done ;;
    big | many) for ((i = 1; i <= MEMORY_RUNS; i++)); do copy_round "$c" "$i"; done ;;
  esac
done

# --- the table ---------------------------------------------------------------------

declare -A what=(
  [cold]="20 busybox RUN steps, cold"
  [warm]="same, warm registry cache, empty machine, pushed"
  [copy]="COPY . of 10,000 files, 500 MiB"
  [big]="COPY of one 2 GiB file"
  [many]="COPY of 100,000 files, 100 MiB"
  [apt]="Debian apt-get install python3 python3-pip"
  [flask]="examples/flask-app, warm registry cache, pushed"
)
declare -A aim=([cold]="<= 0.03" [warm]="<= 0.05, 0 B" [copy]="<= 0.2" [big]="RSS <= 200 MB" [many]="RSS <= 200 MB" [apt]="-" [flask]="-")
status=0
echo
echo "executor $("$EXECUTOR" --version 2>/dev/null | head -n 1) vs buildah $(buildah --version | awk '{ print $3 }') --isolation=chroot --format docker (storage driver $driver); $(nproc) cores; load average before $load_before, after $(cut -d' ' -f1-3 /proc/loadavg)"
printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' case rounds "executor s (cpu)" "buildah s (cpu)" "ratio" aim \
  "peak RSS executor / buildah" "layer bytes downloaded executor / buildah" check
echo "|---|---|---|---|---|---|---|---|---|"
for c in $CASES; do
  awk -v what="${what[$c]}" -v aim="${aim[$c]}" '
    { e[NR] = $1; er[NR] = $2; ec[NR] = $3; eb[NR] = $4; b[NR] = $5; br[NR] = $6; bc[NR] = $7; bb[NR] = $8
      r[NR] = $1 / $5; check[NR] = $9
      if ($2 > erm) erm = $2; if ($6 > brm) brm = $6; if ($4 > ebm) ebm = $4; if ($8 > bbm) bbm = $8 }
    function median(a, n,   i, j, t, s) {
      for (i = 1; i <= n; i++) s[i] = a[i]
      for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (s[j] < s[i]) { t = s[i]; s[i] = s[j]; s[j] = t }
      return n % 2 ? s[(n + 1) / 2] : (s[n / 2] + s[n / 2 + 1]) / 2
    }
    END {
      n = NR; verdict = "ok"
      for (i = 1; i <= n; i++) {
        if (check[i] ~ /^FAIL/) verdict = check[i]
        else if (check[i] ~ /^sha256:/ && check[i] != check[1]) verdict = "FAIL:layer digest changed"
      }
      if (verdict == "ok" && check[1] ~ /^sha256:/) verdict = "same digest " substr(check[1], 1, 19)
      if (verdict == "ok" && check[1] ~ /^cached=/) verdict = check[1]
      printf "| %s | %d | %.2f (%.1f) | %.2f (%.1f) | %.3f | %s | %d / %d MiB | %d / %d | %s |\n",
        what, n, median(e, n), median(ec, n), median(b, n), median(bc, n), median(r, n), aim,
        erm / 1024, brm / 1024, ebm, bbm, verdict
      exit verdict ~ /^FAIL/
    }' "$top/results-$c" || status=1
done
exit "$status"
