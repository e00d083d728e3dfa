"""A snapshot's manifest: which 512 KiB blocks it holds and where each one is stored.

A block that is not in the manifest reads as zeros. Each stored block is a ``BlockRef``: the
digest of the stored bytes (what the EBS direct APIs hand out as the BlockToken, and what every
read checks) and its place in a pack file (``packs.py``). The digest is an xxh3-128
fingerprint (16 bytes); manifests written before 2026-11-27 hold blake3 digests (32 bytes),
read and checked as such.

Binary layout (little-endian)::

    header   magic, size_bytes u64, block_size u32, block count u64, pack count u32;
             magic "VMIMAN05" (plaintext) | "VMIMAN06" (encrypted): 16-byte fingerprints,
                   "VMIMAN03" (plaintext) | "VMIMAN04" (encrypted): 32-byte blake3 digests
    encrypted only: snapshot id, KMS key ARN, wrapped data key (each u16 length + bytes)
    packs    pack count x 16 bytes (pack names, as raw uuid bytes)
    entries  block count x (block index u64, digest, pack number u32, offset u64,
             length u32), by increasing block index
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

BLOCK_SIZE = 512 * 1024

# (plaintext magic, encrypted magic) -> entry layout, by the digest's length in hex digits
_LAYOUTS = {32: (b"VMIMAN05", b"VMIMAN06", struct.Struct("<Q16sIQI")),  # xxh3-128
            64: (b"VMIMAN03", b"VMIMAN04", struct.Struct("<Q32sIQI"))}  # blake3, until 2026-11-27
_BY_MAGIC = {magic: (encrypted, entry) for plain, enc, entry in _LAYOUTS.values()
             for magic, encrypted in ((plain, False), (enc, True))}
_OLDER = (b"VMIMAN01", b"VMIMAN02")  # one file per block: before pack files
_HEADER = struct.Struct("<8sQIQI")
_FIELD = struct.Struct("<H")
_PACK_NAME = 16


class BlockStoreError(Exception):
    """A block or manifest is missing or does not match its digest (storage corruption)."""


@dataclass(frozen=True, slots=True)
class BlockRef:
    """One stored block: its digest and where its bytes are."""

    digest: str  # hex xxh3-128 fingerprint of the stored bytes (blake3 in older stores)
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
    # Of ``blocks``, how many the write that made this manifest found stored already (in
    # another snapshot, or earlier in the same disk) and shared instead of writing them. Known
    # only to that write (None when read back): it goes into the snapshot's row, not the file.
    shared_blocks: int | None = field(default=None, compare=False)

    @property
    def block_count(self) -> int:
        """Blocks in the whole volume, stored or not."""
        return -(-self.size_bytes // self.block_size)

    def check_belongs_to(self, snapshot_id: str) -> "Manifest":
        """Itself, unless it is an encrypted snapshot's manifest stored under another id."""
        if self.encryption is not None and self.encryption.snapshot_id != snapshot_id:
            raise BlockStoreError(f"the manifest of {snapshot_id} belongs to "
                                  f"{self.encryption.snapshot_id}")
        return self

    def packs(self) -> set[str]:
        return {ref.pack for ref in self.blocks.values()}

    def to_bytes(self) -> bytes:
        packs = sorted(self.packs())
        number = {name: n for n, name in enumerate(packs)}
        lengths = {len(ref.digest) for ref in self.blocks.values()} or {32}
        if len(lengths) != 1 or not lengths <= _LAYOUTS.keys():
            raise ValueError(f"a manifest holds digests of one kind; these have {lengths} "
                             "hex digits")
        plain, encrypted, entry = _LAYOUTS[lengths.pop()]
        magic = plain if self.encryption is None else encrypted
        parts = [_HEADER.pack(magic, self.size_bytes, self.block_size, len(self.blocks),
                              len(packs))]
        if self.encryption is not None:
            enc = self.encryption
            for value in (enc.snapshot_id.encode(), enc.key_arn.encode(), enc.wrapped_key):
                parts += [_FIELD.pack(len(value)), value]
        parts += [bytes.fromhex(name) for name in packs]
        parts += [entry.pack(i, bytes.fromhex(r.digest), number[r.pack], r.offset, r.length)
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
        if magic not in _BY_MAGIC:
            raise BlockStoreError("manifest damaged")
        encrypted, entry = _BY_MAGIC[magic]
        pos = _HEADER.size
        encryption = None
        if encrypted:
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
        if len(raw) != pos + pack_count * _PACK_NAME + count * entry.size:
            raise BlockStoreError("manifest damaged")
        packs = [raw[pos + n * _PACK_NAME:pos + (n + 1) * _PACK_NAME].hex()
                 for n in range(pack_count)]
        pos += pack_count * _PACK_NAME
        blocks = {}
        for index, digest, pack, offset, length in entry.iter_unpack(raw[pos:]):
            if pack >= pack_count:
                raise BlockStoreError("manifest damaged")
            blocks[index] = BlockRef(digest.hex(), packs[pack], offset, length)
        return cls(size_bytes=size_bytes, blocks=blocks, block_size=block_size,
                   encryption=encryption)
