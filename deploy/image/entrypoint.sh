#!/bin/sh
# netvigil container entrypoint. The agent picks the kernel headers itself
# (sensor/kernel_headers.py): the node's /lib/modules/$(uname -r)/build when the DaemonSet
# mounts it (with /usr/src), else the generic headers this image ships at
# $NETVIGIL_FALLBACK_HEADERS (/opt/netvigil/kernel); `netvigil doctor` reports the same.
exec /opt/netvigil/venv/bin/netvigil "$@"
