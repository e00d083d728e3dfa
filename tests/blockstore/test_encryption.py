"""Encrypted snapshots in the block store: sealed blocks, the VMIMAN02 manifest, tampering."""

import os

import pytest

from vmimport.blockstore.crypto import BlockCipher, IntegrityError
from vmimport.blockstore.reader import SnapshotReader
from vmimport.blockstore.file_store import BLOCK_SIZE, BlockRef, BlockStoreError, \
    FileBlockStore, Manifest, ManifestEncryption
from vmimport.blockstore.writer import write_snapshot

MARKER = b"PLAINTEXT-MARKER-0123456789" * 100


def _write(store, snapshot_id="snap-0123456789abcdef0"):
    data = bytearray(3 * BLOCK_SIZE + 1000)
    data[10:10 + len(MARKER)] = MARKER
    data[2 * BLOCK_SIZE:2 * BLOCK_SIZE + len(MARKER)] = MARKER  # block 1 stays zero
    key = os.urandom(32)
    cipher = BlockCipher(key, snapshot_id)
    record = ManifestEncryption(snapshot_id, "arn:aws:kms:us-east-1:000000000000:key/k",
                                b"wrapped-data-key")
    manifest = write_snapshot(store, len(data), [(0, bytes(data))], cipher=cipher,
                              encryption=record)
    store.write_manifest(snapshot_id, manifest)
    return bytes(data), key, manifest


def test_sealed_blocks_hold_no_plaintext_and_read_back(tmp_path):
    store = FileBlockStore(tmp_path)
    data, key, manifest = _write(store)
    assert sorted(manifest.blocks) == [0, 2]  # zero blocks are not stored
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert b"PLAINTEXT-MARKER" not in path.read_bytes()
    again = store.read_manifest("snap-0123456789abcdef0")
    assert again.encryption == manifest.encryption and again.blocks == manifest.blocks
    reader = SnapshotReader(store, again, BlockCipher(key, "snap-0123456789abcdef0"))
    assert reader.read() == data
    with pytest.raises(ValueError):
        SnapshotReader(store, again)  # no cipher
    with pytest.raises(BlockStoreError):
        store.read_block(again, 0, BlockCipher(os.urandom(32), "snap-0123456789abcdef0"))


def test_tampered_or_moved_block_is_refused(tmp_path):
    store = FileBlockStore(tmp_path)
    _, key, manifest = _write(store)
    cipher = BlockCipher(key, "snap-0123456789abcdef0")
    # Moved: block 2's sealed bytes presented as block 3.
    ref = manifest.blocks[2]
    sealed = store.get_block(ref)
    with pytest.raises(IntegrityError):
        cipher.open_block(3, sealed)
    with pytest.raises(IntegrityError):
        BlockCipher(key, "snap-other").open_block(2, sealed)
    # Altered on disk: one flipped byte.
    with open(store.pack_path(ref), "r+b") as pack:
        pack.seek(ref.offset + 100)
        byte = pack.read(1)[0]
        pack.seek(ref.offset + 100)
        pack.write(bytes([byte ^ 1]))
    with pytest.raises(BlockStoreError):
        store.read_block(manifest, 2, cipher)


def test_manifest_formats_round_trip():
    plain = Manifest(size_bytes=5, blocks={0: BlockRef("ab" * 32, "01" * 16, 0, BLOCK_SIZE)})
    assert Manifest.from_bytes(plain.to_bytes()) == plain
    enc = Manifest(size_bytes=5, blocks={0: BlockRef("cd" * 32, "02" * 16, 4096, 524316)},
                   encryption=ManifestEncryption("snap-1", "arn:k", b"\x00\x01"))
    assert Manifest.from_bytes(enc.to_bytes()) == enc
    with pytest.raises(BlockStoreError):
        Manifest.from_bytes(enc.to_bytes()[:-1])
