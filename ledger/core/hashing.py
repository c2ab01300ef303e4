"""RFC 9162 §2.1 hashing: domain-separated leaf and interior-node hashes over SHA-256."""

from __future__ import annotations

import hashlib

__all__ = ["EMPTY_ROOT", "LEAF_PREFIX", "NODE_PREFIX", "leaf_hash", "node_hash", "sha256"]

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"

_sha256 = hashlib.sha256


def sha256(data: bytes) -> bytes:
    return _sha256(data).digest()


def leaf_hash(data: bytes) -> bytes:
    return _sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(NODE_PREFIX + left + right).digest()


EMPTY_ROOT = sha256(b"")
