"""On-disk constants of the segment format (version 1).

A segment file is ``MAGIC`` followed by a stream of msgpack arrays (records):

* ``[HEADER, {...}]``: first record; the root of the segment's hash chain.
* data records ``[kind, ..., tag]``: ``tag`` is a 16-bit keyed BLAKE2b of the record's
  bytes and its index, always encoded as ``0xcd XX XX`` (3 bytes); it locates damage.
* ``[CHECK, b"NVck", count, chain_hash]`` after every flushed block: ``chain_hash`` =
  BLAKE2b(previous chain hash + the block's bytes), ``count`` = data records so far.
* ``[FOOTER, b"NVft", count, chain_hash, first_ns, last_ns, counts, tag]`` on close;
  ``tag`` binds the time range and counts to the chain hash.

See docs/forensics.md for the full description.
"""
from __future__ import annotations

import re
from pathlib import Path

MAGIC = b"\x89NVSEG\r\n"
FORMAT_VERSION = 1
SUFFIX = ".nvseg"
DEFAULT_DIRECTORY = Path("/var/lib/netvigil/recordings")
LOCK_NAME = ".lock"  # held (flock, exclusive) by the recorder writing to a directory

# record kinds
K_HEADER = 0
K_EVENT = 1
K_CHECK = 2
K_FOOTER = 3
K_FIELD = 4
K_VALUE = 5
K_SHAPE = 6
K_PROC = 7
K_ALERT = 8
K_VERDICT = 9
K_RAWEVENT = 10
DATA_KINDS = frozenset({K_EVENT, K_FIELD, K_VALUE, K_SHAPE, K_PROC, K_ALERT, K_VERDICT,
                        K_RAWEVENT})

CHECK_MAGIC = b"NVck"
FOOTER_MAGIC = b"NVft"
# byte patterns used to find a checkpoint/footer again after damaged bytes
CHECK_PATTERN = b"\x94\x02\xc4\x04" + CHECK_MAGIC
FOOTER_PATTERN = b"\x98\x03\xc4\x04" + FOOTER_MAGIC
FOOTER_KEYS = ("kind", "magic", "count", "chain_hash", "first_ns", "last_ns", "counts", "tag")
TAG_PREFIX = b"\xcd"
TAG_LEN = 3  # encoded length of the tag at the end of every data record

# field codecs inside a shape
C_RAW = 0
C_INTERN = 1
C_DELTA = 2

# derivation flags inside a shape
D_FDNAME = 1        # fd.name = "cip:cport->sip:sport"
D_LOCAL_CLIENT = 2  # fd.lip/lport = fd.cip/cport, fd.rip/rport = fd.sip/sport
D_LOCAL_SERVER = 4  # fd.lip/lport = fd.sip/sport, fd.rip/rport = fd.cip/cport
D_TID_PID = 8       # thread.tid = proc.pid

_NAME_RE = re.compile(r"^seg-(\d{10})\.nvseg$")


def segment_name(seq: int) -> str:
    """File name of the segment with sequence number ``seq``."""
    return f"seg-{seq:010d}{SUFFIX}"


def segment_seq(path: Path) -> int | None:
    """Sequence number encoded in a segment file name, or None if not a segment name."""
    m = _NAME_RE.match(path.name)
    return int(m.group(1)) if m else None


def list_segments(directory: Path) -> list[tuple[int, Path]]:
    """(seq, path) of every segment file in ``directory``, oldest first."""
    out = []
    try:
        entries = list(directory.iterdir())
    except FileNotFoundError:
        return []
    for p in entries:
        seq = segment_seq(p)
        if seq is not None and p.is_file():
            out.append((seq, p))
    out.sort()
    return out
