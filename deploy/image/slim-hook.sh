#!/usr/bin/env bash
# mmdebstrap customize hook: drop from the agent's venv what netvigil never imports
# (the kubernetes client's asyncio variant and the aiohttp stack only it uses: ~75 MB),
# pip itself, then byte-compile once (the root filesystem may be read-only at run time)
# and check that what the agent imports still imports and its BPF sources are there.
set -euo pipefail
root=$1
venv=/opt/netvigil/venv
run() { chroot "$root" env -i PATH=/usr/bin:/bin "$@"; }
rm -rf "$root$venv"/lib/python3.11/site-packages/kubernetes/aio
run $venv/bin/pip uninstall -q -y aiohttp aiohttp-retry aiosignal aiohappyeyeballs frozenlist \
  multidict yarl propcache
run $venv/bin/pip uninstall -q -y pip setuptools
run $venv/bin/python -m compileall -q $venv/lib
run $venv/bin/python -c "import bcc, kubernetes.client, kubernetes.watch, prometheus_client, sensor.cli, sensor.run_command"
# the BPF sources came with the wheel (package data), where the agent looks for them
run $venv/bin/python -c "from sensor.bpf_program import SENSOR_SOURCES, bpf_source_dir as d; [open(d() / n).close() for n in (*SENSOR_SOURCES, 'sensor.h', 'enforce.c', 'enforce.h')]"
