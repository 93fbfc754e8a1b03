#!/usr/bin/env bash
# Build the netvigil OCI image offline: Debian packages (mmdebstrap, from the host's
# apt sources) + a wheel of this checkout in a venv that sees BCC, packed with umoci into
# an OCI layout and an `oci-archive` tarball (what `ctr images import` and
# `skopeo copy oci-archive:...` take).
#
# The build is content-addressed: its inputs (this directory and the project files the
# wheel is built from) hash to a cache directory, $NETVIGIL_IMAGE_CACHE/<hash>
# (default /var/cache/netvigil-image), reused when it exists. The last line printed on
# stdout is that directory; it holds `oci/` (layout, tag $version) and `netvigil.oci.tar`.
# After a build, only the $NETVIGIL_IMAGE_KEEP (default 3) newest builds are kept.
# Usage: deploy/image/build.sh [--force]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache_root=${NETVIGIL_IMAGE_CACHE:-/var/cache/netvigil-image}
suite=${NETVIGIL_IMAGE_SUITE:-bookworm}
log() { echo "image: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then log "must run as root (mmdebstrap --mode=root, umoci)"; exit 1; fi
for tool in mmdebstrap umoci skopeo; do
  command -v "$tool" >/dev/null || { log "$tool is missing (make bootstrap installs it)"; exit 1; }
done

version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$repo/pyproject.toml" | head -n1)
# Inputs: the image recipe and every file the wheel is built from (no caches, no venv).
inputs() {
  (cd "$repo" && find deploy/image pyproject.toml sensor rules alerts bpf -type f \
     ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
  echo "suite=$suite mirror=${NETVIGIL_IMAGE_MIRROR:-}"
}
hash=$(inputs | sha256sum | cut -c1-16)
out="$cache_root/$hash"
if [ "${1:-}" != "--force" ] && [ -f "$out/netvigil.oci.tar" ]; then
  touch "$out"
  log "cached: $out"
  echo "$out"
  exit 0
fi

started=$(date +%s)
work=$(mktemp -d "${TMPDIR:-/tmp}/netvigil-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/wheels" "$work/bundle"

# 1. Wheels: netvigil from the checkout (with bpf/*.c and *.h as package data) plus its
#    dependencies (pip's configured indexes).
log "building wheels"
mkdir -p "$work/src"
cp -a "$repo/pyproject.toml" "$repo/sensor" "$repo/rules" "$repo/alerts" "$repo/bpf" "$work/src/"
find "$work/src" -name __pycache__ -prune -exec rm -rf {} +
python3 -m pip wheel -q --disable-pip-version-check --wheel-dir "$work/wheels" "$work/src" >&2

# 2. Root filesystem: Essential:yes + packages.txt, no docs/man/locales, no apt lists.
packages=$(grep -v '^\s*#' "$here/packages.txt" | tr -s ' \n' ',' | sed 's/^,//; s/,$//')
rootfs="$work/bundle/rootfs"
log "mmdebstrap $suite: $packages"
mirror=${NETVIGIL_IMAGE_MIRROR:-http://deb.debian.org}
mmdebstrap --mode=root --variant=essential --include="$packages" \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/lintian/*' \
  --customize-hook='copy-in '"$work/wheels"' /tmp' \
  --customize-hook='chroot "$1" python3 -m venv --system-site-packages /opt/netvigil/venv' \
  --customize-hook='chroot "$1" env -i PATH=/usr/bin:/bin /opt/netvigil/venv/bin/pip install -q --no-index --disable-pip-version-check --no-compile --find-links /tmp/wheels netvigil' \
  --customize-hook="$here/slim-hook.sh" \
  --customize-hook='rm -rf "$1/tmp/wheels"' \
  --customize-hook="$here/headers-hook.sh" \
  --customize-hook='mkdir -p "$1/etc/netvigil/config" "$1/etc/netvigil/rules" "$1/opt/netvigil/rules" && ln -sfn ../venv/lib/python3.11/site-packages/rules/default "$1/opt/netvigil/rules/default"' \
  --customize-hook='mkdir -p "$1/usr/local/bin" && cp '"$here/entrypoint.sh"' "$1/usr/local/bin/netvigil-entrypoint"' \
  --customize-hook='rm -rf "$1"/var/cache/* "$1"/var/log/* "$1"/var/lib/apt/lists/* "$1"/usr/share/python-wheels' \
  "$suite" "$rootfs" \
  "deb $mirror/debian $suite main" "deb $mirror/debian $suite-updates main" \
  "deb $mirror/debian-security $suite-security main" >&2

# 3. OCI layout + archive.
log "packing with umoci"
rm -rf "$out.tmp" && mkdir -p "$out.tmp"
layout="$out.tmp/oci"
umoci init --layout "$layout"
umoci new --image "$layout:$version"
umoci unpack --image "$layout:$version" "$work/empty" >/dev/null
mv "$rootfs" "$work/rootfs" && rm -rf "$work/empty/rootfs" && mv "$work/rootfs" "$work/empty/rootfs"
umoci repack --image "$layout:$version" "$work/empty"
umoci config --image "$layout:$version" \
  --config.entrypoint /usr/local/bin/netvigil-entrypoint \
  --config.cmd run \
  --config.env PATH=/opt/netvigil/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --config.env NETVIGIL_FALLBACK_HEADERS=/opt/netvigil/kernel \
  --config.workingdir / \
  --config.label org.opencontainers.image.title=netvigil \
  --config.label org.opencontainers.image.version="$version" \
  --config.label io.netvigil.inputs="$hash"
umoci gc --layout "$layout"
skopeo copy -q "oci:$layout:$version" "oci-archive:$out.tmp/netvigil.oci.tar:netvigil:$version" >&2
rm -rf "$out" && mv "$out.tmp" "$out"
# prune older builds (each edit of the sources makes one)
ls -1dt "$cache_root"/*/ 2>/dev/null | tail -n +$(( ${NETVIGIL_IMAGE_KEEP:-3} + 1 )) | xargs -r rm -rf
log "built $out in $(( $(date +%s) - started ))s: $(du -sh "$out/netvigil.oci.tar" | cut -f1) archive"
echo "$out"
