#!/usr/bin/env bash
# mmdebstrap customize hook: ship Debian's generic cloud kernel headers as one merged
# tree at /opt/netvigil/kernel (the arch-specific package overlaid on -common, x86 only),
# so the entrypoint can point BCC_KERNEL_SOURCE at it when the node has no headers.
# The packages are extracted, not installed: their dependencies (kbuild, gcc) are for
# building modules, which BCC does not do.
set -euo pipefail
root=$1
export APT_CONFIG=$MMDEBSTRAP_APT_CONFIG
arch_pkg=$(apt-cache depends linux-headers-cloud-amd64 | sed -n 's/.*Depends: \(linux-headers-.*-cloud-amd64\)$/\1/p' | head -n1)
common_pkg=$(apt-cache depends "$arch_pkg" | sed -n 's/.*Depends: \(linux-headers-.*-common\)$/\1/p' | head -n1)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download -q=2 "$arch_pkg" "$common_pkg")
for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$tmp/x"; done
kernel="$root/opt/netvigil/kernel"
mkdir -p "$kernel"
common=$(ls -d "$tmp"/x/usr/src/linux-headers-*-common)
build=$(ls -d "$tmp"/x/usr/src/linux-headers-*-cloud-amd64)
cp -a "$common/include" "$common/Makefile" "$kernel/"
mkdir -p "$kernel/arch" && cp -a "$common/arch/x86" "$kernel/arch/"
cp -a "$build/include/." "$kernel/include/"
cp -a "$build/arch/x86/." "$kernel/arch/x86/"
cp -a "$build/.config" "$kernel/"
echo "${arch_pkg#linux-headers-}" > "$kernel/RELEASE"
