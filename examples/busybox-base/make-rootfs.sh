#!/usr/bin/env bash
# make-rootfs.sh DIR: a busybox root filesystem in DIR (made anew), for the
# examples' base images: Debian's static busybox (package busybox-static)
# with its applets as symlinks, the files in rootfs-files/ (/etc/passwd and
# /etc/group), /tmp and /root. No registry and no download.
set -euo pipefail
dir=${1:?usage: make-rootfs.sh DIR}
here=$(cd "$(dirname "$0")" && pwd)
[ -x /bin/busybox ] || { echo "make-rootfs.sh: /bin/busybox is missing (apt-get install busybox-static)" >&2; exit 1; }
rm -rf "$dir"
mkdir -p "$dir/bin" "$dir/tmp" "$dir/root"
cp -a "$here/rootfs-files/." "$dir/"
cp /bin/busybox "$dir/bin/busybox"
for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -s busybox "$dir/bin/$applet"
done
chmod 1777 "$dir/tmp"
chmod 0700 "$dir/root"
