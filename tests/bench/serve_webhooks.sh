#!/usr/bin/env bash
# Benchmark of `executor serve`'s webhook intake (not a test; run by hand):
#
#   1. 1,000 signed GitHub push deliveries posted over 10 s (32 client
#      threads, evenly spread) to a server with no runner, on SQLite, then
#      on PostgreSQL: every one must be answered 202 and be in the queue
#      (`executor_queue_depth` from /metrics); prints p50/p99/max time to
#      the 202;
#   2. with one idle in-process runner (SQLite), the time from a push's 202
#      to its run's first job starting, over 5 runs of the serve example's
#      repository served over git HTTP on 127.0.0.1.
#
# Everything listens on 127.0.0.1 and stops by itself. PostgreSQL: the URL
# in EXECUTOR_BENCH_DATABASE_URL, else a throwaway cluster from Debian's
# postgresql package (initdb as the postgres user); skipped when neither.
# EXECUTOR=PATH uses that binary (default: a release build).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
die() { echo "error: $*" >&2; exit 1; }
# shellcheck source=tests/bench/common.sh
source "$repo/tests/bench/common.sh"
executor_binary
command -v python3 >/dev/null || die "python3 is needed (apt-get install python3)"

work=$(mktemp -d "${TMPDIR:-/tmp}/executor-bench-serve.XXXXXX")
pids=()
cleanup() {
    for pid in ${pids[@]+"${pids[@]}"}; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ -n "${pg_data:-}" ]; then
        setpriv --reuid postgres --regid postgres --init-groups -- "$pg_bin/pg_ctl" -D "$pg_data" -m fast stop >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
secret=bench-webhook-secret
printf '%s' "$secret" > "$work/hook"

# config NAME PORT DATABASE_LINE CLONE_URL: writes $work/NAME.toml.
config() {
    cat > "$work/$1.toml" <<TOML
listen = "127.0.0.1:$2"
data_dir = "data-$1"
$3
base_url = "http://127.0.0.1:$2"
[runner]
cache_dir = "cache"
[[repository]]
name = "bench/app"
clone_url = "$4"
forge = "github"
webhook_secret = { file = "hook" }
TOML
}

# serve NAME PORT RUNNERS: starts a server, waits for it.
serve() {
    "$EXECUTOR" serve --config "$work/$1.toml" --runners "$3" 2> "$work/$1.log" &
    pids+=($!)
    for _ in $(seq 200); do
        curl -fsS -o /dev/null "http://127.0.0.1:$2/healthz" 2>/dev/null && return 0
        sleep 0.1
    done
    die "executor serve did not start: $(tail -5 "$work/$1.log")"
}

queue_depth() {
    curl -fsS "http://127.0.0.1:$1/metrics" | awk '/^executor_queue_depth /{print $2}'
}

# hooks NAME PORT: the 1,000 deliveries and the queue check.
hooks() {
    echo "== $1: 1000 signed webhooks in 10 s"
    python3 "$repo/tests/bench/serve_webhooks.py" hooks "127.0.0.1:$2" "$secret" 1000 10
    depth=$(queue_depth "$2")
    echo "queued: $depth"
    [ "$depth" = 1000 ] || die "$1: $depth runs queued, not 1000"
}

port=$(free_port)
config sqlite "$port" "" "http://127.0.0.1:9/none.git"
serve sqlite "$port" 0
hooks SQLite "$port"

pg_url=${EXECUTOR_BENCH_DATABASE_URL:-}
if [ -z "$pg_url" ] && [ "$(id -u)" = 0 ] && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    pg_bin=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")
    pg_data="$work/pg"
    mkdir -p "$pg_data" && chown postgres:postgres "$pg_data" "$work"
    as_pg() { setpriv --reuid postgres --regid postgres --init-groups -- "$@"; }
    as_pg "$pg_bin/initdb" -D "$pg_data" -U postgres --auth=trust >/dev/null
    pg_port=$(free_port)
    as_pg "$pg_bin/pg_ctl" -D "$pg_data" -l "$pg_data/log" -w \
        -o "-p $pg_port -k $pg_data -c listen_addresses=127.0.0.1 -c fsync=on" start >/dev/null
    as_pg "$pg_bin/createdb" -h 127.0.0.1 -p "$pg_port" -U postgres bench
    pg_url="postgres://postgres@127.0.0.1:$pg_port/bench"
fi
if [ -n "$pg_url" ]; then
    port=$(free_port)
    printf '%s' "$pg_url" > "$work/database-url"
    config postgres "$port" 'database_url = { file = "database-url" }' "http://127.0.0.1:9/none.git"
    serve postgres "$port" 0
    hooks PostgreSQL "$port"
else
    echo "== PostgreSQL: skipped (no EXECUTOR_BENCH_DATABASE_URL, no postgresql package or not root)"
fi

echo "== 202 to the first job started, one idle runner (SQLite)"
mkdir -p "$work/app" "$work/git"
cp -r "$repo/examples/quickstart/Dockerfile" "$repo/examples/quickstart/app" "$work/app/"
sed '/secrets:/,/TOKEN:/d; /\$TOKEN/d' "$repo/examples/serve/pipeline.yaml" > "$work/app/pipeline.yaml"
bash "$repo/examples/busybox-base/make-rootfs.sh" "$work/app/rootfs" >/dev/null
git -C "$work/app" init -q -b main
git -C "$work/app" add -A
git -C "$work/app" -c user.name=bench -c user.email=bench@example.invalid commit -q -m bench
git clone -q --bare "$work/app" "$work/git/app.git"
commit=$(git -C "$work/app" rev-parse HEAD)
git_port=$(free_port)
python3 "$repo/examples/serve/helpers.py" git "$git_port" "$work/git" &
pids+=($!)
port=$(free_port)
config latency "$port" "" "http://127.0.0.1:$git_port/app.git"
serve latency "$port" 1
python3 "$repo/tests/bench/serve_webhooks.py" latency "127.0.0.1:$port" "$secret" "$commit" \
    "http://127.0.0.1:$git_port/app.git" 5
