# Sourced by the benchmarks, which define `repo` (the checkout) and `die`.
#
# executor_binary: sets EXECUTOR to a release build of this checkout
# (`cargo build --release`) unless EXECUTOR names a binary already.
#
# start_registry DIR: starts Debian's docker-registry on a free 127.0.0.1
# port with its storage and log under DIR, waits until it answers, and sets
# `registry` (HOST:PORT) and `registry_pid`; the caller stops it on exit.

executor_binary() {
  if [[ -z ${EXECUTOR:-} ]]; then
    echo "== cargo build --release -p executor" >&2
    (cd "$repo" && cargo build --release --locked -p executor >&2)
    EXECUTOR=${CARGO_TARGET_DIR:-$repo/target}/release/executor
  fi
  [[ -x $EXECUTOR ]] || die "no executor binary at $EXECUTOR"
}

start_registry() {
  local dir=$1 port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  registry=127.0.0.1:$port
  cat >"$dir/registry.yml" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $dir/registry
http:
  addr: $registry
YAML
  docker-registry serve "$dir/registry.yml" >"$dir/registry.log" 2>&1 &
  registry_pid=$!
  for _ in $(seq 100); do
    curl -fsS "http://$registry/v2/" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "the registry did not start: $(cat "$dir/registry.log")"
}
