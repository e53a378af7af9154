#!/usr/bin/env bash
# copy_heavy.sh: how fast, and how lean, is a COPY-heavy build?
#
# Builds one image whose only layer is a big build context, with executor
# (release build) and with buildah, in the same run, and prints both wall
# times, their ratio and executor's peak RSS. Exits 1 when executor's peak
# RSS reaches the limit (200 MiB by default), 2 on a setup failure.
#
#   tests/bench/copy_heavy.sh                 # one round
#   RUNS=3 tests/bench/copy_heavy.sh          # three rounds, then a summary
#
# The context (generated once, then reused from the cache dir):
#   10,000 files, 500 MiB in all, in ~600 nested directories (up to 6
#   deep): 9,976 small files (100 B to 256 KiB, log-uniform sizes, 310 MiB
#   together; source-like text, random bytes, or runs of both) and 24 large
#   ones (2 to 15 MiB, 190 MiB together; random with text runs).
#   Deterministic (fixed seed); `gzip -6` makes it 72% of its size, so
#   compression does real work. Plus two symlinks and an empty directory.
# The Dockerfile:
#   FROM scratch
#   COPY . /data/
#
# What is timed, per round (both tools start with empty storage, the context
# is in the page cache for both: it was just generated or just read):
#   executor  `executor build --no-push --oci-layout-path OUT` with a fresh
#             --cache-dir: context -> gzip layer in its store -> OCI layout.
#             (OUTPUT=tar: `--tar-path OUT`, a docker-archive tarball.)
#   buildah   `buildah bud --isolation=chroot --format docker -t IMG` into a
#             private store (--root/--runroot in the temp dir, overlay driver,
#             vfs if overlay cannot be used), then `buildah push IMG oci:OUT`,
#             which is what gzips the layer (bud stores it uncompressed).
#             (OUTPUT=tar: `push IMG docker-archive:OUT`.)
#             Both steps count: together they give the same kind of output as
#             executor's single command. The two are also printed apart.
# executor's peak RSS comes from `/usr/bin/time -v` (package `time`), which
# also gives each tool's CPU time (user + system): on a shared machine the
# wall times move with the neighbours' load, CPU times much less.
#
# Settings (environment):
#   RUNS=1              rounds to run
#   OUTPUT=oci          oci | tar: what both tools write
#   FILES=10000 MB=500  context shape (a new shape gets its own cache dir)
#   RSS_LIMIT_MB=200    executor peak RSS limit, MiB
#   BENCH_CACHE=~/.cache/executor-bench   where generated contexts live
#   BENCH_TMP=/tmp      where each round's stores and outputs go (same
#                       filesystem as the context is fairest)
#   EXECUTOR=path       use this binary instead of building
#                       `cargo build --release -p executor`
#   BUILDAH=0           skip buildah (executor figures only)
#   KEEP=1              keep each round's temp dir
# Needs: bash, python3 (generator), buildah, GNU time. Run as root (buildah
# with its own store; executor sets owners in its layers).

set -euo pipefail

RUNS=${RUNS:-1}
OUTPUT=${OUTPUT:-oci}
FILES=${FILES:-10000}
MB=${MB:-500}
RSS_LIMIT_MB=${RSS_LIMIT_MB:-200}
BENCH_CACHE=${BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/executor-bench}
BENCH_TMP=${BENCH_TMP:-${TMPDIR:-/tmp}}
BUILDAH=${BUILDAH:-1}
KEEP=${KEEP:-0}

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

die() {
  echo "copy_heavy: $*" >&2
  exit 2
}

case $OUTPUT in oci | tar) ;; *) die "OUTPUT must be oci or tar, not $OUTPUT" ;; esac
[[ -x /usr/bin/time ]] || die "GNU time is missing
hint: apt-get install -y time"
command -v python3 >/dev/null || die "python3 is missing (it generates the context)"
if [[ $BUILDAH == 1 ]]; then
  command -v buildah >/dev/null || die "buildah is missing
hint: apt-get install -y buildah, or BUILDAH=0 for executor alone"
fi

# --- the executor binary ------------------------------------------------------
# shellcheck source=tests/bench/common.sh
source "$repo/tests/bench/common.sh"
executor_binary

# --- the context, generated once ----------------------------------------------
context=$BENCH_CACHE/copy-heavy-v1-${FILES}f-${MB}m
if [[ ! -f $context/.complete ]]; then
  echo "== generating $FILES files, $MB MiB into $context (once)" >&2
  rm -rf "$context"
  mkdir -p "$context"
  python3 - "$context" "$FILES" "$MB" <<'PY'
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
small = [int(100 * (2621.44 ** rng.random())) for _ in range(n_small)]  # 100 B..256 KiB
large = [rng.uniform(4, 40) for _ in range(n_large)]
budget = total - sum(small)
if budget <= 0:
    sys.exit("copy_heavy: MB is too small for FILES")
large = [int(budget * x / sum(large)) for x in large]
large[-1] += budget - sum(large)

written = 0
for i, size in enumerate(small):
    d = dirs[i % len(dirs)] if i % 7 else dirs[rng.randrange(len(dirs))]
    kind = rng.choices(["text", "random", "mixed"], [5, 3, 2])[0]
    ext = {"text": ".rs", "random": ".bin", "mixed": ".dat"}[kind]
    path = os.path.join(root, d, f"f{i:05d}{ext}")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(content(size, kind))
    written += size
for i, size in enumerate(large):
    path = os.path.join(root, "blobs", f"large{i:02d}.bin")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left:  # 1 MiB at a time: the generator stays small too
            n = min(left, 1 << 20)
            f.write(content(n, "mixed" if rng.random() < 0.5 else "random"))
            left -= n
    written += size
os.makedirs(os.path.join(root, "empty-dir"))
os.symlink("src", os.path.join(root, "link-to-src"))
os.symlink("blobs/large00.bin", os.path.join(root, "link-to-large"))
with open(os.path.join(root, "Dockerfile"), "w") as f:
    f.write("FROM scratch\nCOPY . /data/\n")
with open(os.path.join(root, ".dockerignore"), "w") as f:
    f.write(".complete\n")
count = sum(len(fs) for _, _, fs in os.walk(root))
print(f"copy_heavy: generated {count} files, {written / 2**20:.1f} MiB", file=sys.stderr)
PY
  touch "$context/.complete"
fi

# Read it once so both tools start from the page cache.
tar -C "$context" -cf - . | cat >/dev/null

# --- one round ------------------------------------------------------------------
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

driver=overlay
results=()

round() {
  local n=$1
  work=$(mktemp -d "$BENCH_TMP/copy-heavy-XXXXXX")

  # executor
  local out_args=(--oci-layout-path "$work/executor-out")
  [[ $OUTPUT == tar ]] && out_args=(--tar-path "$work/executor-out.tar")
  local t0 t1
  t0=$(now)
  if ! /usr/bin/time -v -o "$work/executor.time" "$EXECUTOR" build \
    --context "$context" --dockerfile Dockerfile --no-push \
    --destination localhost/copy-heavy:bench \
    --cache-dir "$work/executor-store" "${out_args[@]}" \
    >"$work/executor.log" 2>&1; then
    cat "$work/executor.log" >&2
    die "executor build failed"
  fi
  t1=$(now)
  local exec_s rss_kib
  exec_s=$(elapsed "$t0" "$t1")
  rss_kib=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$work/executor.time")
  local exec_cpu
  exec_cpu=$(awk -F': ' '/(User|System) time/ { s += $2 } END { printf "%.1f", s }' "$work/executor.time")

  local bud_s="-" push_s="-" bh_s="-" ratio="-" bh_cpu="-" bh_size="-"
  if [[ $BUILDAH == 1 ]]; then
    local bh=(buildah --root "$work/buildah/root" --runroot "$work/buildah/run" --storage-driver "$driver")
    local dest="oci:$work/buildah-out"
    [[ $OUTPUT == tar ]] && dest="docker-archive:$work/buildah-out.tar:localhost/copy-heavy:bench"
    t0=$(now)
    if ! /usr/bin/time -f '%U %S' -o "$work/bud.time" "${bh[@]}" bud --isolation=chroot --format docker --layers=false \
      -t localhost/copy-heavy:bench -f "$context/Dockerfile" "$context" \
      >"$work/buildah.log" 2>&1; then
      cat "$work/buildah.log" >&2
      die "buildah bud failed (storage driver $driver)"
    fi
    t1=$(now)
    bud_s=$(elapsed "$t0" "$t1")
    t0=$(now)
    if ! /usr/bin/time -f '%U %S' -o "$work/push.time" \
      "${bh[@]}" push localhost/copy-heavy:bench "$dest" >>"$work/buildah.log" 2>&1; then
      cat "$work/buildah.log" >&2
      die "buildah push failed"
    fi
    t1=$(now)
    push_s=$(elapsed "$t0" "$t1")
    bh_s=$(awk -v a="$bud_s" -v b="$push_s" 'BEGIN { printf "%.2f", a + b }')
    ratio=$(awk -v e="$exec_s" -v b="$bh_s" 'BEGIN { printf "%.2f", e / b }')
    bh_size=$(du -sm "$work"/buildah-out* | awk '{ s += $1 } END { print s }')
    bh_cpu=$(cat "$work/bud.time" "$work/push.time" | awk '{ s += $1 + $2 } END { printf "%.1f", s }')
  fi
  local out_size
  out_size=$(du -sm "$work"/executor-out* | awk '{ s += $1 } END { print s }')
  printf 'round %d: executor %6ss (cpu %ss, peak RSS %d MiB, output %s MiB) | buildah %6ss (bud %ss + push %ss, cpu %ss, output %s MiB) | executor/buildah %s\n' \
    "$n" "$exec_s" "$exec_cpu" $((rss_kib / 1024)) "$out_size" "$bh_s" "$bud_s" "$push_s" "$bh_cpu" "$bh_size" "$ratio"
  results+=("$exec_s $rss_kib $bh_s $ratio")
  finish_round
}

# Removes the round's temp dir (unless KEEP=1), also on failure or ^C.
work=
finish_round() {
  [[ -n $work ]] || return 0
  cleanup_buildah "$work/buildah"
  [[ $KEEP == 1 ]] || rm -rf "$work"
  work=
}
trap finish_round EXIT

# Pick the buildah storage driver: overlay where it works, vfs otherwise.
if [[ $BUILDAH == 1 ]]; then
  pick_buildah_driver "$(mktemp -d "$BENCH_TMP/copy-heavy-probe-XXXXXX")"
fi

echo "== context $context ($FILES files, $MB MiB); output $OUTPUT; buildah driver $driver; $(nproc) cores" >&2
echo "== executor $EXECUTOR" >&2
for ((i = 1; i <= RUNS; i++)); do
  round "$i"
done

# --- summary --------------------------------------------------------------------
limit_kib=$((RSS_LIMIT_MB * 1024))
worst_kib=0
for r in "${results[@]}"; do
  read -r _ rss _ _ <<<"$r"
  ((rss > worst_kib)) && worst_kib=$rss
done
if ((RUNS > 1)); then
  printf '%s\n' "${results[@]}" | awk '
    { e[NR] = $1; b[NR] = $3; r[NR] = $4; if ($2 > m) m = $2 }
    function median(a, n,   i, j, t) {
      for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
      return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    END {
      n = NR
      printf "median of %d: executor %.2fs | buildah %s | executor/buildah %s | max executor peak RSS %d MiB\n",
        n, median(e, n), (b[1] == "-" ? "-" : sprintf("%.2fs", median(b, n))),
        (r[1] == "-" ? "-" : sprintf("%.2f", median(r, n))), m / 1024
    }'
fi
if ((worst_kib >= limit_kib)); then
  echo "FAIL: executor peak RSS $((worst_kib / 1024)) MiB >= limit $RSS_LIMIT_MB MiB" >&2
  exit 1
fi
echo "ok: executor peak RSS $((worst_kib / 1024)) MiB < $RSS_LIMIT_MB MiB"
