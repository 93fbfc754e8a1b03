"""Hash chain and record tags (BLAKE2b, keyed when a recording key is configured)."""
from __future__ import annotations

import os
from hashlib import blake2b

HASH_LEN = 32


def root_hash(header_bytes: bytes, key: bytes | None) -> bytes:
    """Chain root: hash of the header record's bytes (keyed MAC when ``key`` is set)."""
    return blake2b(header_bytes, digest_size=HASH_LEN, key=key or b"",
                   person=b"netvigil-root").digest()


def block_hash(previous: bytes, block: bytes, key: bytes | None) -> bytes:
    """Next chain hash: H(previous hash + the bytes of one block of records)."""
    h = blake2b(previous, digest_size=HASH_LEN, key=key or b"", person=b"netvigil-blk")
    h.update(block)
    return h.digest()


def footer_tag(chain_hash: bytes, fields: bytes, key: bytes | None) -> bytes:
    """Tag of a footer: binds its time range and counts to the final chain hash."""
    h = blake2b(chain_hash, digest_size=16, key=key or b"", person=b"netvigil-foot")
    h.update(fields)
    return h.digest()


def record_tag(root: bytes, index: int, body: bytes) -> bytes:
    """16-bit tag of data record ``index`` (its bytes without the tag), keyed by the root."""
    return blake2b(index.to_bytes(8, "little") + body, digest_size=2, key=root).digest()


def normalize_key(key: bytes | str | None) -> bytes | None:
    """A recording key as BLAKE2b key material (<= 64 bytes); None when unkeyed."""
    if not key:
        return None
    if isinstance(key, str):
        key = key.encode()
    if len(key) > 64:
        key = blake2b(key, digest_size=64).digest()
    return key


def key_fingerprint(key: bytes | None) -> str | None:
    """Short public identifier of a recording key (stored in headers, not secret)."""
    if not key:
        return None
    return blake2b(key, digest_size=6, person=b"netvigil-kid").hexdigest()


def new_chain_id() -> str:
    """Identifier of a new chain of segments (a recording): random, in every header.

    A recorder continuing a directory keeps the chain id of its newest segment, so a
    segment says which recording it belongs to (``chain``) and where (``seq``,
    ``prev_seq``, ``prev_hash``); replay refuses to take a copy, a renamed file or a
    segment of another recording for part of the history.
    """
    return os.urandom(8).hex()
