#!/bin/sh
# netvigil container entrypoint: make kernel headers visible to BCC, then exec the agent.
# BCC compiles against /lib/modules/$(uname -r)/build. The node's own headers are used
# when the DaemonSet mounts them (/lib/modules and /usr/src read-only from the host);
# otherwise BCC_KERNEL_SOURCE points at Debian's generic headers shipped in the image
# (/opt/netvigil/kernel), as scripts/bootstrap.sh links them on a host. Our BPF C reads
# no kernel-internal struct, so any recent headers do.
set -eu
build=/lib/modules/$(uname -r)/build
if [ -z "${BCC_KERNEL_SOURCE:-}" ] && [ ! -e "$build/include/linux/kconfig.h" ] \
   && [ ! -e "$build/include/generated/autoconf.h" ]; then
  export BCC_KERNEL_SOURCE=/opt/netvigil/kernel
  echo "netvigil-entrypoint: no kernel headers for $(uname -r) on the node;" \
       "using the image's linux-headers-$(cat /opt/netvigil/kernel/RELEASE)" >&2
fi
exec /opt/netvigil/venv/bin/netvigil "$@"
