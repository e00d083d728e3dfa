"""Snapshots as manifests of 512 KiB blocks (EBS's block size), each non-zero block stored once by
content hash. A snapshot's manifest maps block index -> block digest; a block that is not in the
manifest reads as zeros. Blocks are shared between snapshots (dedup), so deleting a snapshot only
deletes its manifest (see ``BlockStore.collect_garbage``).

On-disk layout under ``root``::

    blocks/<d[0:2]>/<digest>              the block's bytes (blake3 hex digest); the 256
                                          directories exist from the start (a fresh store
                                          would otherwise make one per block)
    manifests/<snapshot-id>               binary manifest (see ``Manifest``)

Encrypted snapshots use the same directories, but what is stored is the *sealed* block
(``crypto.BlockCipher``: AES-256-GCM under the snapshot's own data key, block index and snapshot
id as associated data) and its name is the blake3 digest of those sealed bytes. Sealing uses a
random nonce, so encrypted blocks are never shared between snapshots (no dedup, and nothing at
rest — name or content — derives from the plaintext); garbage collection works unchanged. The
manifest of an encrypted snapshot (``VMIMAN02``) also records the snapshot id, the KMS key ARN
and the data key *wrapped* by that KMS key — never the data key itself.
"""

from __future__ import annotations

import itertools
import os
import threading
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import blake3

BLOCK_SIZE = 512 * 1024
ZERO_BLOCK = bytes(BLOCK_SIZE)

_MAGIC = b"VMIMAN01"
_MAGIC_ENCRYPTED = b"VMIMAN02"
_HEADER = struct.Struct("<8sQIQ")      # magic, size_bytes, block_size, count
_ENTRY = struct.Struct("<Q32s")        # block index, blake3 digest
# VMIMAN02 only, after the header: three length-prefixed fields (u16 length + bytes):
# snapshot id, KMS key ARN, wrapped data key.
_FIELD = struct.Struct("<H")


def block_digest(data) -> str:
    return blake3.blake3(data, max_threads=1).hexdigest()


class BlockStoreError(Exception):
    """A block or manifest is missing or does not match its digest (storage corruption)."""


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
    blocks: dict[int, str] = field(default_factory=dict)
    block_size: int = BLOCK_SIZE
    encryption: ManifestEncryption | None = None

    def to_bytes(self) -> bytes:
        magic = _MAGIC if self.encryption is None else _MAGIC_ENCRYPTED
        parts = [_HEADER.pack(magic, self.size_bytes, self.block_size, len(self.blocks))]
        if self.encryption is not None:
            enc = self.encryption
            for value in (enc.snapshot_id.encode(), enc.key_arn.encode(), enc.wrapped_key):
                parts += [_FIELD.pack(len(value)), value]
        parts += [_ENTRY.pack(i, bytes.fromhex(d)) for i, d in sorted(self.blocks.items())]
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, raw: bytes) -> "Manifest":
        if len(raw) < _HEADER.size:
            raise BlockStoreError("manifest truncated")
        magic, size_bytes, block_size, count = _HEADER.unpack_from(raw)
        pos = _HEADER.size
        encryption = None
        if magic == _MAGIC_ENCRYPTED:
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
        elif magic != _MAGIC:
            raise BlockStoreError("manifest damaged")
        if len(raw) != pos + count * _ENTRY.size:
            raise BlockStoreError("manifest damaged")
        blocks = {}
        for n in range(count):
            index, digest = _ENTRY.unpack_from(raw, pos + n * _ENTRY.size)
            blocks[index] = digest.hex()
        return cls(size_bytes=size_bytes, blocks=blocks, block_size=block_size,
                   encryption=encryption)

    @property
    def block_count(self) -> int:
        """Blocks in the whole volume, stored or not."""
        return -(-self.size_bytes // self.block_size)


class BlockStore:
    """Content-addressed blocks and snapshot manifests in a local directory."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.blocks_dir = self.root / "blocks"
        self.manifests_dir = self.root / "manifests"
        self.blocks_dir.mkdir(parents=True, exist_ok=True)
        self.manifests_dir.mkdir(parents=True, exist_ok=True)
        self._made_dirs: set[str] = set()  # block directories known to exist
        self._blocks_prefix = str(self.blocks_dir)
        for n in range(256):
            directory = f"{self._blocks_prefix}/{n:02x}"
            if not os.path.isdir(directory):
                os.makedirs(directory, exist_ok=True)
            self._made_dirs.add(directory)

    def block_path(self, digest: str) -> Path:
        """Where a block's file is (for tools and tests; the hot paths build strings)."""
        return Path(self._block_dir(digest)) / digest

    def _block_dir(self, digest: str) -> str:
        return f"{self._blocks_prefix}/{digest[:2]}"

    def put_block_pieces(self, pieces: list[tuple[int, memoryview]]) -> str:
        """``put_block`` of the 512 KiB block made of ``pieces`` [(offset in the block, data)]
        with zeros elsewhere, hashed and written piece by piece (no copy into one buffer)."""
        parts = _with_zero_gaps(pieces)
        hasher = blake3.blake3(max_threads=1)
        for part in parts:
            hasher.update(part)
        digest = hasher.hexdigest()
        self._store_new(digest, parts)
        return digest

    def put_block(self, data) -> str:
        """Store one block (if not stored already) and return its digest. Safe to call from
        several threads and processes: the file appears atomically under its final name."""
        digest = block_digest(data)
        self._store_new(digest, [data])
        return digest

    def _store_new(self, digest: str, parts: list) -> None:
        directory = self._block_dir(digest)
        path = f"{directory}/{digest}"
        if not os.path.exists(path):
            if directory not in self._made_dirs:
                os.makedirs(directory, exist_ok=True)
                self._made_dirs.add(directory)
            _write_new_file(directory, path, parts)

    def get_block(self, digest: str) -> bytes:
        try:
            with open(f"{self._block_dir(digest)}/{digest}", "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise BlockStoreError(f"block {digest} is missing from the block store") from None
        if block_digest(data) != digest:
            raise BlockStoreError(f"block {digest} is damaged (its content no longer matches)")
        return data

    def write_manifest(self, snapshot_id: str, manifest: Manifest) -> None:
        _atomic_write(self.manifests_dir / snapshot_id, manifest.to_bytes())

    def read_manifest(self, snapshot_id: str) -> Manifest:
        try:
            manifest = Manifest.from_bytes((self.manifests_dir / snapshot_id).read_bytes())
        except FileNotFoundError:
            raise BlockStoreError(f"snapshot {snapshot_id} has no manifest") from None
        if manifest.encryption is not None and manifest.encryption.snapshot_id != snapshot_id:
            raise BlockStoreError(f"the manifest of {snapshot_id} belongs to "
                                  f"{manifest.encryption.snapshot_id}")
        return manifest

    def read_block(self, manifest: Manifest, index: int, cipher=None) -> bytes:
        """The plaintext of block ``index`` of ``manifest`` (zeros if not stored). An
        encrypted manifest needs its ``crypto.BlockCipher``; a block that fails its digest or
        its authentication raises ``BlockStoreError`` and is never returned."""
        digest = manifest.blocks.get(index)
        if digest is None:
            return bytes(manifest.block_size)
        data = self.get_block(digest)
        if manifest.encryption is None:
            return data
        if cipher is None:
            raise BlockStoreError("the snapshot is encrypted; its data key is needed to read it")
        from .crypto import IntegrityError

        try:
            return cipher.open_block(index, data)
        except IntegrityError as exc:
            raise BlockStoreError(str(exc)) from None

    def has_manifest(self, snapshot_id: str) -> bool:
        return (self.manifests_dir / snapshot_id).exists()

    def delete_manifest(self, snapshot_id: str) -> None:
        try:
            (self.manifests_dir / snapshot_id).unlink()
        except FileNotFoundError:
            pass

    def collect_garbage(self) -> int:
        """Delete blocks that no manifest references; returns how many. Call it while no import
        is writing (a block written but not yet in a manifest would look unreferenced)."""
        live: set[str] = set()
        for path in self.manifests_dir.iterdir():
            live.update(Manifest.from_bytes(path.read_bytes()).blocks.values())
        removed = 0
        for path in self.blocks_dir.glob("*/*"):
            if path.name not in live and not path.name.startswith("."):
                path.unlink(missing_ok=True)
                removed += 1
        return removed


_tmp_names = itertools.count()


_ZERO_VIEW = memoryview(bytes(BLOCK_SIZE))


def _with_zero_gaps(pieces: list[tuple[int, memoryview]]) -> list[memoryview]:
    """The block's bytes in order as a list of buffers: the pieces and zeros around them."""
    parts, pos = [], 0
    for within, piece in pieces:
        if within > pos:
            parts.append(_ZERO_VIEW[:within - pos])
        parts.append(piece)
        pos = within + len(piece)
    if pos < BLOCK_SIZE:
        parts.append(_ZERO_VIEW[:BLOCK_SIZE - pos])
    return parts


def _write_new_file(directory: str, path: str, parts: list) -> None:
    """Write ``parts`` (buffers, in order) as the file ``path``, atomically (a temporary name,
    then rename), with the fewest system calls: blocks are written by the thousand."""
    tmp = f"{directory}/.tmp-{os.getpid()}-{threading.get_ident()}-{next(_tmp_names)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        views = [memoryview(part).cast("B") for part in parts]
        while views:
            written = os.writev(fd, views)
            while views and written >= len(views[0]):
                written -= len(views.pop(0))
            if written:
                views[0] = views[0][written:]
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        os.unlink(tmp)
        raise


def _atomic_write(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
