"""A snapshot's manifest: which 512 KiB blocks it holds and where each one is stored.

A block that is not in the manifest reads as zeros. Each stored block is a ``BlockRef``: the
blake3 digest of the stored bytes (what the EBS direct APIs hand out as the BlockToken, and
what every read checks) and its place in a pack file (``packs.py``).

Binary layout (little-endian)::

    header   magic "VMIMAN03" (plaintext) | "VMIMAN04" (encrypted), size_bytes u64,
             block_size u32, block count u64, pack count u32
    VMIMAN04 only: snapshot id, KMS key ARN, wrapped data key (each u16 length + bytes)
    packs    pack count x 16 bytes (pack names, as raw uuid bytes)
    entries  block count x (block index u64, digest 32 bytes, pack number u32,
             offset u64, length u32), by increasing block index
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

BLOCK_SIZE = 512 * 1024

_PLAIN = b"VMIMAN03"
_ENCRYPTED = b"VMIMAN04"
_OLDER = (b"VMIMAN01", b"VMIMAN02")  # one file per block: before pack files
_HEADER = struct.Struct("<8sQIQI")
_FIELD = struct.Struct("<H")
_PACK_NAME = 16
_ENTRY = struct.Struct("<Q32sIQI")


class BlockStoreError(Exception):
    """A block or manifest is missing or does not match its digest (storage corruption)."""


@dataclass(frozen=True, slots=True)
class BlockRef:
    """One stored block: its digest and where its bytes are."""

    digest: str  # blake3 hex of the stored bytes
    pack: str  # pack file name (32 hex digits)
    offset: int
    length: int


@dataclass(frozen=True)
class ManifestEncryption:
    """How an encrypted snapshot's blocks are sealed: under a data key that only the KMS key
    ``key_arn`` can unwrap; ``snapshot_id`` is bound into every block's associated data."""

    snapshot_id: str
    key_arn: str
    wrapped_key: bytes


@dataclass
class Manifest:
    size_bytes: int
    blocks: dict[int, BlockRef] = field(default_factory=dict)
    block_size: int = BLOCK_SIZE
    encryption: ManifestEncryption | None = None

    @property
    def block_count(self) -> int:
        """Blocks in the whole volume, stored or not."""
        return -(-self.size_bytes // self.block_size)

    def packs(self) -> set[str]:
        return {ref.pack for ref in self.blocks.values()}

    def to_bytes(self) -> bytes:
        packs = sorted(self.packs())
        number = {name: n for n, name in enumerate(packs)}
        magic = _PLAIN if self.encryption is None else _ENCRYPTED
        parts = [_HEADER.pack(magic, self.size_bytes, self.block_size, len(self.blocks),
                              len(packs))]
        if self.encryption is not None:
            enc = self.encryption
            for value in (enc.snapshot_id.encode(), enc.key_arn.encode(), enc.wrapped_key):
                parts += [_FIELD.pack(len(value)), value]
        parts += [bytes.fromhex(name) for name in packs]
        parts += [_ENTRY.pack(i, bytes.fromhex(r.digest), number[r.pack], r.offset, r.length)
                  for i, r in sorted(self.blocks.items())]
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, raw: bytes) -> "Manifest":
        if len(raw) < _HEADER.size:
            raise BlockStoreError("manifest truncated")
        if raw[:8] in _OLDER:
            raise BlockStoreError("the manifest was written by an older vmimport (one file per "
                                  "block); this version reads pack files only")
        magic, size_bytes, block_size, count, pack_count = _HEADER.unpack_from(raw)
        if magic not in (_PLAIN, _ENCRYPTED):
            raise BlockStoreError("manifest damaged")
        pos = _HEADER.size
        encryption = None
        if magic == _ENCRYPTED:
            values = []
            for _ in range(3):
                if pos + _FIELD.size > len(raw):
                    raise BlockStoreError("manifest damaged")
                (length,) = _FIELD.unpack_from(raw, pos)
                pos += _FIELD.size
                values.append(raw[pos:pos + length])
                pos += length
            try:
                encryption = ManifestEncryption(values[0].decode(), values[1].decode(),
                                                bytes(values[2]))
            except UnicodeDecodeError:
                raise BlockStoreError("manifest damaged") from None
        if len(raw) != pos + pack_count * _PACK_NAME + count * _ENTRY.size:
            raise BlockStoreError("manifest damaged")
        packs = [raw[pos + n * _PACK_NAME:pos + (n + 1) * _PACK_NAME].hex()
                 for n in range(pack_count)]
        pos += pack_count * _PACK_NAME
        blocks = {}
        for index, digest, pack, offset, length in _ENTRY.iter_unpack(raw[pos:]):
            if pack >= pack_count:
                raise BlockStoreError("manifest damaged")
            blocks[index] = BlockRef(digest.hex(), packs[pack], offset, length)
        return cls(size_bytes=size_bytes, blocks=blocks, block_size=block_size,
                   encryption=encryption)
