# Sourced by the benchmarks: start_registry DIR starts Debian's
# docker-registry on a free 127.0.0.1 port with its storage and log under
# DIR, waits until it answers, and sets `registry` (HOST:PORT) and
# `registry_pid`. The caller defines `die` and stops the registry on exit.

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
