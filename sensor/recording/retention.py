"""Pruning: keep a recording directory under its total size limit, oldest first."""
from __future__ import annotations

import logging
from pathlib import Path

from sensor.recording.format import list_segments

log = logging.getLogger(__name__)


def prune(directory: Path, max_total_bytes: int, keep: frozenset[Path] = frozenset()
          ) -> list[Path]:
    """Delete the oldest segments until the directory holds <= max_total_bytes.

    Segments in ``keep`` (the one being written) are never deleted. Returns the
    removed paths, oldest first.
    """
    segs = []
    total = 0
    for _, path in list_segments(directory):
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            continue
        segs.append((path, size))
        total += size
    removed = []
    for path, size in segs:
        if total <= max_total_bytes:
            break
        if path in keep:
            continue
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot prune %s: %s", path, exc.strerror)
            continue
        total -= size
        removed.append(path)
    return removed
