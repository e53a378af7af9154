#!/usr/bin/env bash
# Builds the executor image with executor itself, both variants:
#   default  /kaniko/executor, its shared libraries and their loader, CA
#            certificates; no shell;
#   debug    the same plus busybox under /busybox (for `cat` keep-alive
#            agents and `kubectl exec`).
#
#   examples/image/build.sh              OCI layouts target/image/layout-default
#                                        and layout-debug (docker.io/library/
#                                        executor:latest and :debug)
#   examples/image/build.sh REPOSITORY   pushed as REPOSITORY:latest and
#                                        REPOSITORY:debug (extra flags for
#                                        the pushes in EXECUTOR_PUSH_FLAGS,
#                                        e.g. --insecure-registry HOST)
#
# Reproducible: SOURCE_DATE_EPOCH is the commit's time, so the same commit
# gives the same digests. Environment: EXECUTOR=PATH builds with (and
# packs) that binary instead of a release build; OUT (default
# target/image) holds the staged context, the layout and digest files.
set -euo pipefail
cd "$(dirname "$0")/../.."
say() { printf '\n== %s\n' "$*" >&2; }
# shellcheck source=examples/common.sh
source examples/common.sh

out=${OUT:-$PWD/target/image}
repo=${1:-}
executor_binary
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}

say "staging the image's files in $out/context"
ctx=$out/context
rm -rf "$ctx"
mkdir -p "$ctx/rootfs/kaniko/lib" "$ctx/rootfs/kaniko/ssl/certs" \
    "$ctx/rootfs/kaniko/.docker" "$ctx/rootfs/workspace" "$ctx/rootfs/root" \
    "$ctx/rootfs/etc" "$ctx/rootfs/tmp" "$ctx/rootfs-debug/busybox"
chmod 1777 "$ctx/rootfs/tmp"
cp examples/image/Dockerfile "$ctx/Dockerfile"
# The binary finds its loader in /kaniko/lib (its ELF interpreter is
# rewritten in place: the new path is shorter) and its libraries there
# through LD_LIBRARY_PATH.
python3 - "$executor" "$ctx/rootfs/kaniko/executor" <<'PY'
import struct, sys
elf = bytearray(open(sys.argv[1], "rb").read())
assert elf[:4] == b"\x7fELF", "not an ELF file"
phoff, = struct.unpack_from("<Q", elf, 0x20)
phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
for i in range(phnum):
    header = phoff + i * phentsize
    if struct.unpack_from("<I", elf, header)[0] == 3:  # PT_INTERP
        offset, = struct.unpack_from("<Q", elf, header + 8)
        size, = struct.unpack_from("<Q", elf, header + 32)
        path = b"/kaniko/lib/ld.so"
        assert len(path) < size
        elf[offset:offset + size] = path + b"\0" * (size - len(path))
        break
else:
    sys.exit("no PT_INTERP: a static binary needs no loader")
open(sys.argv[2], "wb").write(elf)
PY
chmod 755 "$ctx/rootfs/kaniko/executor"
# The release profile keeps line tables for backtraces; the image does not
# need them (a third of its size).
strip --strip-debug "$ctx/rootfs/kaniko/executor"
ldd "$executor" | awk '/=>/ { print $3 } !/=>/ && $1 ~ /^\// { print $1 }' |
    while read -r lib; do
        case "$(basename "$lib")" in
            ld-linux*) cp "$lib" "$ctx/rootfs/kaniko/lib/ld.so" ;;
            *) cp "$lib" "$ctx/rootfs/kaniko/lib/" ;;
        esac
    done
cp /etc/ssl/certs/ca-certificates.crt "$ctx/rootfs/kaniko/ssl/certs/"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' > "$ctx/rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$ctx/rootfs/etc/group"
command -v busybox >/dev/null || install_missing busybox-static
cp "$(command -v busybox)" "$ctx/rootfs-debug/busybox/busybox"
for applet in $("$ctx/rootfs-debug/busybox/busybox" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$ctx/rootfs-debug/busybox/$applet"
done
# Context files' times are clamped to SOURCE_DATE_EPOCH by the build, and
# their owners are root's: only modes and contents reach the image.

build() {
    local target=$1 tag=$2
    local args=(build --context "$ctx" --target "$target" --reproducible
        --cache-dir "$out/store" --digest-file "$out/digest-$target")
    if [ -n "$repo" ]; then
        # shellcheck disable=SC2086
        args+=(--destination "$repo:$tag" ${EXECUTOR_PUSH_FLAGS:-})
    else
        args+=(--no-push --destination "executor:$tag"
            --oci-layout-path "$out/layout-$target")
    fi
    say "building the $target image"
    "$executor" "${args[@]}"
}
build default latest
build debug debug
say "digests: default $(cat "$out/digest-default"), debug $(cat "$out/digest-debug")"
