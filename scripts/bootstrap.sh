#!/usr/bin/env bash
# Idempotent set-up for netvigil on Debian 12: packages, kernel headers where BCC
# looks for them, tracefs/bpffs mounts, and a virtual environment that sees BCC.
# Usage: scripts/bootstrap.sh [--no-venv]   (VENV=path overrides .venv)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv=${VENV:-$here/.venv}
log() { echo "bootstrap: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  log "must run as root (BPF, mounts and apt need it)"; exit 1
fi

# 1. Debian packages --------------------------------------------------------
kver=$(uname -r)
want=(python3-bpfcc python3-venv runc busybox-static iproute2 tmux nginx-light wrk mmdebstrap umoci skopeo libcap2-bin openssl)
missing=()
for p in "${want[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
headers_ok() { [ -e "/lib/modules/$kver/build/include/linux/kconfig.h" ] || [ -e "/lib/modules/$kver/build/include/generated/autoconf.h" ]; }
updated=0
apt_update() { [ $updated -eq 1 ] || { apt-get update -qq >&2; updated=1; }; }
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt_update
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
fi

# 2. Kernel headers -----------------------------------------------------------
# Prefer the running kernel's own headers; otherwise wire in Debian's generic cloud
# headers (our BPF C reads no kernel-internal struct, so any recent headers do).
if ! headers_ok; then
  apt_update
  if apt-cache show "linux-headers-$kver" >/dev/null 2>&1; then
    log "installing linux-headers-$kver"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "linux-headers-$kver" >&2
  fi
fi
if ! headers_ok; then
  if ! ls -d /usr/src/linux-headers-*-cloud-amd64 >/dev/null 2>&1; then
    log "installing linux-headers-cloud-amd64 (generic headers; running kernel has none)"
    apt_update
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-headers-cloud-amd64 >&2
  fi
  build=$(ls -d /usr/src/linux-headers-*-cloud-amd64 | sort -V | tail -n1)
  common=${build%-cloud-amd64}-common
  mkdir -p "/lib/modules/$kver"
  ln -sfn "$build" "/lib/modules/$kver/build"
  ln -sfn "$common" "/lib/modules/$kver/source"
  log "linked /lib/modules/$kver/{build,source} -> $build, $common"
fi

# 3. Mounts -----------------------------------------------------------------
if [ ! -e /sys/kernel/tracing/events ]; then
  mount -t tracefs tracefs /sys/kernel/tracing && log "mounted tracefs"
fi
if [ "$(stat -f -c %T /sys/fs/bpf 2>/dev/null)" != "bpf_fs" ]; then
  mkdir -p /sys/fs/bpf && mount -t bpf bpf /sys/fs/bpf && log "mounted bpffs"
fi
# A DaemonSet mounts bpffs with mountPropagation (containerd insists on a shared host
# mount, as systemd makes every mount); a host without systemd has it private.
if ! awk '$5 == "/sys/fs/bpf" && / shared:/ {found=1} END {exit !found}' /proc/self/mountinfo; then
  mount --make-shared /sys/fs/bpf && log "made /sys/fs/bpf a shared mount"
fi

# 4. Virtual environment ----------------------------------------------------
[ "${1:-}" = "--no-venv" ] && exit 0
if [ ! -x "$venv/bin/python" ]; then
  log "creating $venv"
  /usr/bin/python3 -m venv --system-site-packages "$venv"
fi
stamp="$venv/.netvigil-installed"
if [ ! -f "$stamp" ] || [ "$here/pyproject.toml" -nt "$stamp" ]; then
  log "installing Python dependencies"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$here[test]" >&2
  touch "$stamp"
fi
