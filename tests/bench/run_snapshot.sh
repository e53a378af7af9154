#!/usr/bin/env bash
# run_snapshot.sh: does a RUN's snapshot cost follow what the RUN changed, or
# what the image holds?
#
# Builds `FROM base` + `RUN touch /etc/marker` with executor (release build)
# on two bases: the Debian image (debootstrap minbase bookworm), and the same
# image grown by one more layer of ~2 GiB in many files. Prints the RUN
# step's time and the build's wall time on each, their medians, and whether
# the RUN step grew with the base. Exits 1 when it did (the grown base's
# median RUN step above GROWTH_LIMIT x the plain one's + SLACK_S), 2 on a
# setup failure.
#
#   tests/bench/run_snapshot.sh                # three timed rounds per base
#   RUNS=5 tests/bench/run_snapshot.sh
#   MODE=full tests/bench/run_snapshot.sh      # the full-copy fallback
#
# The bases (made once, then reused from the cache dir):
#   plain   the tarball tests/fixtures/debian-base.sh prints, as one layer
#           (umoci: init, new, unpack, extract, repack; Cmd bash, Debian's
#           PATH).
#   grown   plain + one layer with /grown: GROW_FILES files, GROW_MB MiB in
#           all (default 40,000 files, 2,048 MiB), in ~1,000 directories,
#           sizes log-uniform from 1 KiB to 1 MiB scaled to the total;
#           half random bytes, half text, so gzip does real work.
#           Deterministic (fixed seed). Made with umoci repack as well.
# Both are pushed to a docker-registry started on a free 127.0.0.1 port for
# the run, and pulled from there.
#
# What is timed: per base, one build with an empty executor store (it pulls
# and extracts the base: printed as "first build", not part of the medians),
# then RUNS builds on that store, each with its own `--build-arg NONCE=...`.
# So the timed builds find the base's layers extracted in the store, as a CI
# runner with a warm store does, and the RUN step's time is the sandbox plus
# the snapshot of what the RUN changed. The RUN step's time is taken from
# executor's log (each step line ends with `(N.NNs)`); the wall time is the
# whole `executor build --no-push` (no image output is written: writing a
# layout would copy the 2 GiB base and hide the step in that cost). Peak RSS
# and CPU time from `/usr/bin/time -v` (package `time`).
#
# Settings (environment):
#   RUNS=3              timed builds per base
#   MODE=overlay        executor's --snapshot-mode (overlay | full)
#   GROW_MB=2048 GROW_FILES=40000   the grown layer's shape
#   GROWTH_LIMIT=1.5 SLACK_S=0.25   the pass/fail line (see above)
#   DEBIAN_TARBALL=path the rootfs tarball (default: what
#                       tests/fixtures/debian-base.sh prints, which keeps it
#                       under $EXECUTOR_FIXTURES or target/e2e-fixtures;
#                       it builds it once with debootstrap, which needs the
#                       Debian mirror)
#   BENCH_CACHE=~/.cache/executor-bench   where the bases' layouts live
#   BENCH_TMP=/tmp      where the store, registry and logs go
#   EXECUTOR=path       use this binary instead of building
#                       `cargo build --release -p executor`
#   KEEP=1              keep the temp dir (logs, store)
# Needs: bash, python3, umoci, skopeo, docker-registry, curl, GNU time. Run
# as root (executor's sandbox; umoci keeps the base's owners).

set -euo pipefail

RUNS=${RUNS:-3}
MODE=${MODE:-overlay}
GROW_MB=${GROW_MB:-2048}
GROW_FILES=${GROW_FILES:-40000}
GROWTH_LIMIT=${GROWTH_LIMIT:-1.5}
SLACK_S=${SLACK_S:-0.25}
BENCH_CACHE=${BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/executor-bench}
BENCH_TMP=${BENCH_TMP:-${TMPDIR:-/tmp}}
KEEP=${KEEP:-0}

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

die() {
  echo "run_snapshot: $*" >&2
  exit 2
}

case $MODE in overlay | full) ;; *) die "MODE must be overlay or full, not $MODE" ;; esac
[[ -x /usr/bin/time ]] || die "GNU time is missing
hint: apt-get install -y time"
for tool in python3 umoci skopeo docker-registry curl; do
  command -v "$tool" >/dev/null || die "$tool is missing
hint: apt-get install -y umoci skopeo docker-registry curl python3"
done

# --- the executor binary ------------------------------------------------------
# shellcheck source=tests/bench/common.sh
source "$repo/tests/bench/common.sh"
executor_binary

# --- the bases, made once -------------------------------------------------------
debian_layout
grown_tag=grown-${GROW_FILES}f-${GROW_MB}m
if [[ ! -f $layout/.$grown_tag-complete ]]; then
  echo "== growing it by $GROW_FILES files, $GROW_MB MiB (once; a few minutes)" >&2
  rm -rf "$layout.bundle"
  umoci unpack --image "$layout:plain" "$layout.bundle" >/dev/null
  python3 - "$layout.bundle/rootfs/grown" "$GROW_FILES" "$GROW_MB" <<'PY'
import os, random, sys

root, files, mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(20241130)
words = ("the of and to a is that it with as for on this be by from data file "
         "layer image build run snapshot overlay upper lower diff").split()
sizes = [1024 * (1024 ** rng.random()) for _ in range(files)]  # 1 KiB..1 MiB
scale = mb * 1024 * 1024 / sum(sizes)
ndirs = max(1, files // 40)
line = " ".join(rng.choice(words) for _ in range(4000)).encode()
for i, size in enumerate(sizes):
    size = int(size * scale)
    d = os.path.join(root, f"d{i % ndirs // 100:02d}", f"e{i % ndirs:04d}")
    os.makedirs(d, exist_ok=True)
    half = size // 2
    text = (line * (half // len(line) + 1))[: size - half]
    with open(os.path.join(d, f"f{i:06d}"), "wb") as f:
        f.write(rng.randbytes(half))
        f.write(text)
PY
  umoci repack --image "$layout:$grown_tag" "$layout.bundle"
  rm -rf "$layout.bundle"
  touch "$layout/.$grown_tag-complete"
fi

# --- a registry for the run -------------------------------------------------------
work=$(mktemp -d "$BENCH_TMP/run-snapshot-XXXXXX")
registry_pid=
cleanup() {
  [[ -n $registry_pid ]] && kill "$registry_pid" 2>/dev/null
  [[ $KEEP == 1 ]] && echo "kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT

start_registry "$work"
for tag in plain "$grown_tag"; do
  skopeo copy --quiet --dest-tls-verify=false "oci:$layout:$tag" "docker://$registry/bench/debian:$tag" ||
    die "pushing the $tag base failed"
done

mkdir -p "$work/context"
cat >"$work/context/Dockerfile" <<'EOF'
ARG BASE
FROM $BASE
ARG NONCE
RUN touch /etc/marker
EOF

# --- the builds ---------------------------------------------------------------------
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

# build BASE_TAG STORE NAME: one executor build; prints "run_s wall_s rss_kib cpu_s"
build() {
  local tag=$1 store=$2 name=$3 t0 t1 run_s rss cpu
  t0=$(now)
  if ! /usr/bin/time -v -o "$work/$name.time" "$EXECUTOR" build \
    --context "$work/context" --no-push --destination localhost/run-snapshot:bench \
    --insecure-registry "$registry" --cache-dir "$store" --snapshot-mode "$MODE" \
    --build-arg "BASE=$registry/bench/debian:$tag" --build-arg "NONCE=$name" \
    >"$work/$name.log" 2>&1; then
    cat "$work/$name.log" >&2
    die "executor build failed ($name)"
  fi
  t1=$(now)
  run_s=$(sed -nE 's/.*STEP [0-9]+\/[0-9]+: RUN .*\(([0-9.]+)s\)[^(]*$/\1/p' "$work/$name.log" | tail -n 1)
  [[ -n $run_s ]] || die "no RUN step line with a time in $work/$name.log"
  rss=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$work/$name.time")
  cpu=$(awk -F': ' '/(User|System) time/ { s += $2 } END { printf "%.1f", s }' "$work/$name.time")
  echo "$run_s $(elapsed "$t0" "$t1") $rss $cpu"
}

median() { sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.2f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

echo "== executor $EXECUTOR; --snapshot-mode=$MODE; bases plain and $grown_tag; $(nproc) cores" >&2
declare -A med_run med_wall
for tag in plain "$grown_tag"; do
  store=$work/store-$tag
  out=$(build "$tag" "$store" "$tag-first")
  read -r run_s wall rss cpu <<<"$out"
  printf '%-24s first build (pull + extract): RUN step %6ss, wall %6ss, cpu %ss, peak RSS %d MiB\n' \
    "$tag" "$run_s" "$wall" "$cpu" $((rss / 1024))
  : >"$work/$tag.results"
  for ((i = 1; i <= RUNS; i++)); do
    out=$(build "$tag" "$store" "$tag-$i")
    read -r run_s wall rss cpu <<<"$out"
    printf '%-24s round %d: RUN step %6ss, wall %6ss, cpu %ss, peak RSS %d MiB\n' \
      "$tag" "$i" "$run_s" "$wall" "$cpu" $((rss / 1024))
    echo "$run_s $wall" >>"$work/$tag.results"
  done
  med_run[$tag]=$(awk '{ print $1 }' "$work/$tag.results" | median)
  med_wall[$tag]=$(awk '{ print $2 }' "$work/$tag.results" | median)
done

plain_run=${med_run[plain]} grown_run=${med_run[$grown_tag]}
# The log gives steps to 0.01 s: a ratio of two times under 0.1 s says little.
ratio=$(awk -v p="$plain_run" -v g="$grown_run" 'BEGIN {
  if (p >= 0.1) printf "%.2f", g / p; else printf "n/a: both under 0.1s, the log rounds to 0.01s" }')
printf 'median of %d: RUN step plain %.2fs, grown %.2fs (grown/plain %s) | wall plain %.2fs, grown %.2fs\n' \
  "$RUNS" "$plain_run" "$grown_run" "$ratio" "${med_wall[plain]}" "${med_wall[$grown_tag]}"
if awk -v p="$plain_run" -v g="$grown_run" -v l="$GROWTH_LIMIT" -v s="$SLACK_S" 'BEGIN { exit !(g > p * l + s) }'; then
  echo "FAIL: the RUN step grew with the base (${grown_run}s > ${GROWTH_LIMIT} x ${plain_run}s + ${SLACK_S}s)" >&2
  exit 1
fi
echo "ok: the RUN step did not grow with the base (${grown_run}s <= ${GROWTH_LIMIT} x ${plain_run}s + ${SLACK_S}s)"
