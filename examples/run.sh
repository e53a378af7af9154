#!/usr/bin/env bash
# The README's first command: build the examples end to end on this machine,
# with no Docker daemon and no public registry.
#
#   1. installs what it needs from Debian (as root, when missing):
#      docker-registry, busybox-static, skopeo, umoci;
#   2. builds `executor` (release);
#   3. starts a private registry on 127.0.0.1 (a free port);
#   4. builds the base image `busybox-base` from the Debian busybox binary
#      and pushes it there;
#   5. builds `hello-httpd` FROM that base (two stages, COPY --from, heredoc,
#      --chown by name, WORKDIR, ENV, LABEL, HEALTHCHECK...), pushes it with
#      two tags and writes a `docker load`-able tarball;
#   6. checks the result with tools no one here wrote: `skopeo inspect
#      --config` and `umoci unpack`.
#
# Environment: EXECUTOR=PATH uses that binary instead of building one (the
# tests do); EXECUTOR_EXAMPLES_OUT (default: target/examples) keeps the
# image tarball, the digest file and the logs; KEEP_REGISTRY=1 leaves the
# registry running at the end and prints its address.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

say() { printf '\n== %s\n' "$*" >&2; }
# shellcheck source=examples/common.sh
source examples/common.sh

need=()
command -v docker-registry >/dev/null || need+=(docker-registry)
[ -x /bin/busybox ] || need+=(busybox-static)
command -v skopeo >/dev/null || need+=(skopeo)
command -v umoci >/dev/null || need+=(umoci)
command -v cc >/dev/null || need+=(build-essential)
command -v curl >/dev/null || need+=(curl)
command -v python3 >/dev/null || need+=(python3)
command -v pkg-config >/dev/null || need+=(pkg-config libssl-dev)
install_missing ${need[@]+"${need[@]}"}
executor_binary

out="${EXECUTOR_EXAMPLES_OUT:-$root/target/examples}"
rm -rf "$out"
mkdir -p "$out"
work=$(mktemp -d)
registry_pid=
cleanup() {
    if [ -n "$registry_pid" ] && [ "${KEEP_REGISTRY:-0}" != 1 ]; then
        kill "$registry_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

say "starting a registry on 127.0.0.1"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
    shuf -i 20000-60000 -n 1)
mkdir -p "$work/registry"
cat >"$work/registry.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $work/registry
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
EOF
docker-registry serve "$work/registry.yml" >"$out/registry.log" 2>&1 &
registry_pid=$!
registry="127.0.0.1:$port"
for _ in $(seq 100); do
    curl -fsS "http://$registry/v2/" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -fsS "http://$registry/v2/" >/dev/null

# Every build below: plain HTTP to our own registry, a private image store.
common=(--insecure-registry "$registry" --cache-dir "$out/store")

say "building the base image: busybox from Debian's busybox-static"
ctx="$work/busybox-base"
cp -a examples/busybox-base "$ctx"
bash examples/busybox-base/make-rootfs.sh "$ctx/rootfs"
"$executor" build "${common[@]}" \
    --context "$ctx" \
    --destination "$registry/examples/busybox:1" \
    --destination "$registry/examples/busybox:latest"

say "building hello-httpd FROM that base"
"$executor" build "${common[@]}" \
    --context examples/hello-httpd \
    --build-arg "BASE=$registry/examples/busybox:1" \
    --build-arg VERSION=1.0.0 \
    --label org.opencontainers.image.vendor=executor-examples \
    --destination "$registry/examples/hello-httpd:1.0.0" \
    --destination "$registry/examples/hello-httpd:latest" \
    --tar-path "$out/hello-httpd.tar" \
    --digest-file "$out/hello-httpd.digest" \
    --image-name-with-digest-file "$out/hello-httpd.image"

say "checking the pushed image with skopeo and umoci"
image="$registry/examples/hello-httpd:1.0.0"
skopeo inspect --tls-verify=false --raw --config "docker://$image" >"$out/hello-httpd.config.json"
python3 - "$out/hello-httpd.config.json" <<'EOF'
import json, sys
config = json.load(open(sys.argv[1]))["config"]
expected = {
    "User": "www",
    "WorkingDir": "/srv/www",
    "Entrypoint": ["/bin/httpd", "-f", "-v", "-c", "/etc/httpd.conf"],
    "Cmd": ["-p", "8080", "-h", "/srv/www"],
    "StopSignal": "SIGTERM",
}
for key, value in expected.items():
    assert config.get(key) == value, f"{key}: {config.get(key)!r} != {value!r}"
assert "8080/tcp" in config["ExposedPorts"], config["ExposedPorts"]
assert "PORT=8080" in config["Env"], config["Env"]
assert config["Labels"]["org.opencontainers.image.vendor"] == "executor-examples"
assert config["Healthcheck"]["Test"][0] == "CMD-SHELL"
print("config: ok")
EOF
skopeo copy --quiet --src-tls-verify=false "docker://$image" "oci:$work/layout:hello"
umoci unpack --image "$work/layout:hello" "$work/bundle" >/dev/null
www="$work/bundle/rootfs/srv/www"
grep -q "built without a Docker daemon" "$www/index.html"
grep -q "built by executor" "$www/build-info.txt"
grep -qx "./index.html" "$www/files.txt"
grep -q "^[0-9]* files$" "$www/build-info.txt"
[ "$(stat -c %U:%G "$www/index.html")" = "33:33" ] || [ "$(stat -c %u:%g "$www/index.html")" = "33:33" ]
[ -x "$work/bundle/rootfs/bin/httpd" ]
echo "files: ok" >&2

say "done"
echo "pushed:  $(cat "$out/hello-httpd.image")"
echo "tarball: $out/hello-httpd.tar (docker load -i, or skopeo copy docker-archive:...)"
if [ "${KEEP_REGISTRY:-0}" = 1 ]; then
    echo "registry: http://$registry (pid $registry_pid)"
fi
