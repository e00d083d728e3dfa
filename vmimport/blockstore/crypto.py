"""AES-256-GCM for the block store and KMS: sealed blobs are ``nonce (12) || ciphertext || tag``.

``BlockCipher`` seals the blocks of one encrypted snapshot under that snapshot's data key; the
block index and the snapshot id are bound as associated data, so a block moved to another index
or into another snapshot fails to open, exactly like a block whose bytes were altered.
"""

from __future__ import annotations

import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .manifest import BlockStoreError, Manifest

NONCE_SIZE = 12
TAG_SIZE = 16
KEY_SIZE = 32


class IntegrityError(Exception):
    """A sealed blob did not authenticate: altered, truncated, or opened with the wrong key or
    associated data."""


def seal(key: bytes, plaintext, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_SIZE)
    return nonce + AESGCM(key).encrypt(nonce, bytes(plaintext), aad)


def unseal(key: bytes, blob: bytes, aad: bytes) -> bytes:
    if len(blob) < NONCE_SIZE + TAG_SIZE:
        raise IntegrityError("sealed data is truncated")
    try:
        return AESGCM(key).decrypt(blob[:NONCE_SIZE], blob[NONCE_SIZE:], aad)
    except InvalidTag:
        raise IntegrityError("sealed data failed authentication") from None


class BlockCipher:
    """Seals and opens the blocks of one snapshot with its (plaintext) data key."""

    def __init__(self, data_key: bytes, snapshot_id: str):
        if len(data_key) != KEY_SIZE:
            raise ValueError("a block data key is 32 bytes (AES-256)")
        self._aead = AESGCM(data_key)
        self.snapshot_id = snapshot_id
        self._prefix = b"vmimport-block\0" + snapshot_id.encode() + b"\0"

    def _aad(self, index: int) -> bytes:
        return self._prefix + struct.pack("<Q", index)

    def seal_block(self, index: int, data) -> bytes:
        nonce = os.urandom(NONCE_SIZE)
        return nonce + self._aead.encrypt(nonce, bytes(data), self._aad(index))

    def open_block(self, index: int, blob: bytes) -> bytes:
        if len(blob) < NONCE_SIZE + TAG_SIZE:
            raise IntegrityError(f"block {index} of {self.snapshot_id} is truncated")
        try:
            return self._aead.decrypt(blob[:NONCE_SIZE], blob[NONCE_SIZE:], self._aad(index))
        except InvalidTag:
            raise IntegrityError(f"block {index} of {self.snapshot_id} failed its integrity "
                                 "check (altered or damaged)") from None


def plaintext_block(manifest: Manifest, index: int, stored: bytes, cipher) -> bytes:
    """What block ``index`` of ``manifest`` holds, given its stored (and digest-checked) bytes:
    those bytes, or, for an encrypted manifest, them opened with its ``BlockCipher``. A block
    that fails to authenticate raises ``BlockStoreError`` (every backend's reads use this)."""
    if manifest.encryption is None:
        return stored
    if cipher is None:
        raise BlockStoreError("the snapshot is encrypted; its data key is needed to read it")
    try:
        return cipher.open_block(index, stored)
    except IntegrityError as exc:
        raise BlockStoreError(str(exc)) from None
