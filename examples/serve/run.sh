#!/usr/bin/env bash
# `executor serve` end to end on this machine, offline, on 127.0.0.1 only:
#
#   1. installs what it needs from Debian (as root, when missing);
#   2. builds `executor` (release), unless EXECUTOR names a binary;
#   3. makes an example repository (the quickstart's Dockerfile and app,
#      this directory's pipeline.yaml, busybox from Debian) and serves it
#      over git's HTTP protocol (helpers.py git);
#   4. starts a recording forge API (helpers.py forge) that keeps every
#      commit status it is sent;
#   5. writes executor.toml (SQLite, secrets in files), checks it with
#      `executor serve --check-config`, and starts `executor serve`;
#   6. posts a GitHub push event for the repository's commit, signed with
#      the webhook secret (openssl), with curl: 202 and the run's id;
#   7. follows the run through the JSON API until it succeeds, prints its
#      jobs, the test job's log (the secret masked) and the statuses the
#      forge received (pending, then success, for `executor` and each job).
#
# Environment: EXECUTOR=PATH uses that binary; KEEP=1 leaves the servers
# running and prints their addresses.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

say() { printf '\n== %s\n' "$*" >&2; }
# shellcheck source=examples/common.sh
source examples/common.sh

need=()
[ -x /bin/busybox ] || need+=(busybox-static)
command -v python3 >/dev/null || need+=(python3)
command -v curl >/dev/null || need+=(curl)
command -v openssl >/dev/null || need+=(openssl)
command -v git >/dev/null || need+=(git)
if [ -z "${EXECUTOR:-}" ]; then
    command -v cc >/dev/null || need+=(build-essential)
    command -v pkg-config >/dev/null || need+=(pkg-config libssl-dev)
fi
install_missing ${need[@]+"${need[@]}"}
executor_binary

work=$(mktemp -d "${TMPDIR:-/tmp}/executor-serve-example.XXXXXX")
pids=()
cleanup() {
    if [ "${KEEP:-}" != 1 ]; then
        for pid in ${pids[@]+"${pids[@]}"}; do kill "$pid" 2>/dev/null || true; done
        wait 2>/dev/null || true
        rm -rf "$work"
    fi
}
trap cleanup EXIT
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_http() {
    for _ in $(seq 100); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing answers at $1" >&2
    exit 1
}

say "the example repository (example/app) in $work/repo"
mkdir -p "$work/repo" "$work/git"
cp -r examples/quickstart/Dockerfile examples/quickstart/app "$work/repo/"
cp examples/serve/pipeline.yaml "$work/repo/"
bash examples/busybox-base/make-rootfs.sh "$work/repo/rootfs" >/dev/null
(
    cd "$work/repo"
    git init -q -b main
    git add -A
    git -c user.name=example -c user.email=example@example.invalid commit -q -m "the example app"
)
git clone -q --bare "$work/repo" "$work/git/app.git"
commit=$(git -C "$work/repo" rev-parse HEAD)

git_port=$(free_port)
forge_port=$(free_port)
port=$(free_port)
python3 examples/serve/helpers.py git "$git_port" "$work/git" &
pids+=($!)
python3 examples/serve/helpers.py forge "$forge_port" "$work/statuses.jsonl" &
pids+=($!)
touch "$work/statuses.jsonl"

say "executor.toml and its secrets (files beside it)"
sed -e "s|@PORT@|$port|g" \
    -e "s|@CLONE_URL@|http://127.0.0.1:$git_port/app.git|" \
    -e "s|@FORGE_API@|http://127.0.0.1:$forge_port|" \
    examples/serve/executor.toml > "$work/executor.toml"
secret=$(openssl rand -hex 16)
printf '%s' "$secret" > "$work/webhook-secret"
printf 'forge-token-example' > "$work/forge-token"
printf 'greeting-token-example' > "$work/greeting-token"
openssl rand -hex 16 > "$work/runner-token"
api_token=$(openssl rand -hex 16)
printf '%s' "$api_token" > "$work/api-token"
"$executor" serve --config "$work/executor.toml" --check-config

say "executor serve on 127.0.0.1:$port"
"$executor" serve --config "$work/executor.toml" --runners 1 2> "$work/serve.log" &
pids+=($!)
wait_http "http://127.0.0.1:$port/healthz"

say "a signed GitHub push of $commit"
payload=$(printf '{"ref":"refs/heads/main","before":"0000000000000000000000000000000000000000","after":"%s","created":true,"deleted":false,"head_commit":{"id":"%s","message":"the example app"},"repository":{"id":1,"full_name":"example/app","clone_url":"http://127.0.0.1:%s/app.git"},"sender":{"login":"example"}}' \
    "$commit" "$commit" "$git_port")
signature="sha256=$(printf '%s' "$payload" | openssl dgst -sha256 -hmac "$secret" -r | cut -d' ' -f1)"
answer=$(curl -sS -w ' HTTP %{http_code}' -X POST "http://127.0.0.1:$port/hooks/github" \
    -H "X-GitHub-Event: push" -H "X-GitHub-Delivery: example-$(date +%s%N)" \
    -H "X-Hub-Signature-256: $signature" -H "Content-Type: application/json" \
    --data-binary "$payload")
echo "$answer"
case $answer in *"HTTP 202") ;; *) echo "the push was not queued" >&2; exit 1 ;; esac
run=$(printf '%s' "$answer" | python3 -c 'import json, sys; print(json.loads(sys.stdin.read().rsplit(" HTTP", 1)[0])["run_id"])')

say "run $run, followed through the API"
status=queued
for _ in $(seq 600); do
    status=$(curl -fsS "http://127.0.0.1:$port/api/runs/$run" | python3 -c 'import json, sys; print(json.load(sys.stdin)["status"])')
    case $status in queued|running) sleep 0.5 ;; *) break ;; esac
done
echo "run $run: $status"
curl -fsS "http://127.0.0.1:$port/api/runs/$run/jobs" | python3 -c '
import json, sys
for job in json.load(sys.stdin):
    print("  %-8s %-10s %s ms" % (job["name"], job["status"], job["duration_ms"]))'
say "the test job's log"
curl -fsS "http://127.0.0.1:$port/api/runs/$run/jobs/test/log"

say "commit statuses the forge received"
sleep 1
python3 -c '
import json, sys
for line in open(sys.argv[1]):
    s = json.loads(line)
    print("  %-16s %-8s %-12s %s" % (s["context"], s["state"], s.get("description", ""), s["target_url"]))' "$work/statuses.jsonl"

if [ "${KEEP:-}" = 1 ]; then
    say "left running: executor serve http://127.0.0.1:$port (API token in $work/api-token)"
fi
[ "$status" = succeeded ]
