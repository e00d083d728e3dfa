"""Turn a guest disk's extents into a snapshot: cut into 512 KiB blocks, drop all-zero blocks,
hash and store the others in one new pack, on a small thread pool (reads, hashing and writes
release the GIL)."""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable

from .crypto import BlockCipher
from .interface import BlockStore
from .manifest import BLOCK_SIZE, Manifest, ManifestEncryption
from .packs import ZERO_BLOCK, join_pieces


PROGRESS_EVERY = 16  # blocks (8 MiB) between progress calls: the callback is not free
# Blocks handed to a pool thread at once (see PackWriter.put_blocks): per-batch Python work
# is a good part of an import's user CPU (the 1.2 GiB bench disk, in-process: 0.51 CPU-s with 4,
# 0.38 with 16 or 32). A batch of deferred ranges holds no data (each pool thread reads it into
# its own 8 MiB buffer); a batch of bytes holds them all, so those go 4 blocks at a time
# (max_in_flight=2: at most 3 batches, 6 MiB, held at once; 24 MiB at 16 was seen in RSS).
BATCH_BLOCKS = 16  # a deferred range class may ask for fewer (``batch_blocks``)
BYTES_BATCH_BLOCKS = 4


def write_snapshot(store: BlockStore, size_bytes: int, extents: Iterable[tuple[int, object]],
                   on_progress: Callable[[int], None] | None = None,
                   threads: int = 2, max_in_flight: int = 2,
                   cipher: BlockCipher | None = None,
                   encryption: ManifestEncryption | None = None) -> Manifest:
    """Consume ``extents`` ((guest offset, data), increasing, non-overlapping) and return the
    manifest of the stored blocks. ``data`` is a bytes-like object, or a *deferred* range
    (``__len__``, slicing, ``read_into(view)``: see ``pipeline.formats.ranges.FileRange``)
    that a pool thread reads into its own buffer just before hashing it, so those bytes are
    copied once and hashed while still in the CPU cache. ``on_progress(guest_bytes_done)`` is
    called as blocks go by; it may raise (e.g. ``ImportCancelled``) to stop the work. At most
    ``max_in_flight`` + 1 batches (see ``BATCH_BLOCKS``) are held at once.

    With ``cipher`` (and the ``encryption`` record that goes into the manifest), every block is
    sealed before it is stored, so no plaintext block ever reaches the store."""
    if (cipher is None) != (encryption is None):
        raise ValueError("give both cipher and encryption, or neither")
    manifest = Manifest(size_bytes=size_bytes, encryption=encryption)
    buffers = threading.local()

    def store_batch(batch: list[tuple[int, list]]) -> list:
        batch = _read_deferred(batch, buffers)
        if cipher is not None:  # sealing needs each block in one piece
            refs = [pack.put(cipher.seal_block(index, join_pieces(pieces)))
                    for index, pieces in batch]
        else:
            refs = pack.put_blocks([pieces for _, pieces in batch])
        return [(index, ref) for (index, _), ref in zip(batch, refs)]

    pending: deque[Future] = deque()
    batch: list[tuple[int, list]] = []
    next_progress = PROGRESS_EVERY - 1

    with store.pack_writer(dedup=cipher is None) as pack, \
            ThreadPoolExecutor(max_workers=threads, thread_name_prefix="blockstore") as pool:
        def submit() -> None:
            nonlocal batch
            pending.append(pool.submit(store_batch, batch))
            batch = []
            while len(pending) > max_in_flight:
                manifest.blocks.update(pending.popleft().result())

        fault: list[Exception] = []  # the reader's, raised once the blocks before it are seen
        for index, pieces, deferred in _blocks(size_bytes, extents, fault):
            if deferred or not _all_zero(pieces):  # deferred: checked once read
                batch.append((index, pieces))
                limit = (getattr(pieces[0][1], "batch_blocks", BATCH_BLOCKS) if deferred
                         else BYTES_BATCH_BLOCKS)
                if len(batch) >= limit:
                    submit()
            # Every PROGRESS_EVERY blocks of the disk, holes included (a sparse disk may hold
            # no block at a given multiple); the first after a batch is submitted, since it
            # writes "converting" to the database and the pool should have work meanwhile.
            if on_progress is not None and index >= next_progress:
                on_progress(min(size_bytes, (index + 1) * BLOCK_SIZE))
                next_progress = index + PROGRESS_EVERY
        if batch:
            submit()
        if fault:  # deferred reads before it may fail: such a fault lies earlier in the disk
            while pending:
                pending.popleft().result()
            raise fault[0]
        if on_progress is not None:
            on_progress(size_bytes)
        while pending:
            manifest.blocks.update(pending.popleft().result())
    manifest.shared_blocks = len(manifest.blocks) - pack.blocks_written
    return manifest


def _deferred(data) -> bool:
    """A range the writer reads itself (``read_into``; many at once with the class's
    ``read_many([(range, view)])``) rather than bytes in hand."""
    return hasattr(data, "read_into")


def _all_zero(pieces: list[tuple[int, memoryview]]) -> bool:
    # A memcmp per piece (`==` on a memoryview compares element by element); the gaps between
    # pieces are zeros already.
    return all(ZERO_BLOCK.startswith(piece) for _, piece in pieces)


def _read_deferred(batch: list[tuple[int, list]], buffers: threading.local) -> list:
    """``batch`` with every deferred piece read into this thread's buffer (one block-sized
    slot per block; reused by the thread's next batch, which starts only after this one is
    written), without the blocks that turn out to be all zeros."""
    view = None
    reads = []  # (deferred piece, where it goes)
    placed = []
    for slot, (index, pieces) in enumerate(batch):
        if not any(_deferred(piece) for _, piece in pieces):
            placed.append((index, pieces, False))
            continue
        if view is None:
            view = getattr(buffers, "view", None)
            if view is None:
                view = buffers.view = memoryview(bytearray(BATCH_BLOCKS * BLOCK_SIZE))
        base = slot * BLOCK_SIZE
        read = []
        for within, piece in pieces:
            if _deferred(piece):
                target = view[base + within:base + within + len(piece)]
                reads.append((piece, target))
                piece = target
            read.append((within, piece))
        placed.append((index, read, True))
    if reads:
        type(reads[0][0]).read_many(reads)
    return [(index, pieces) for index, pieces, was_read in placed
            if not (was_read and _all_zero(pieces))]


def _blocks(size_bytes: int, extents: Iterable[tuple[int, object]], fault: list[Exception]):
    """Yield (block index, pieces, deferred?) for every block that any extent touches, in
    order; pieces are [(offset within the block, memoryview or deferred range)], increasing —
    views into the extents, never copies (hashing and writing take them one by one). If the
    extents fail (the reader met a fault in the image), the blocks before the fault are still
    yielded, and the fault is left in ``fault``."""
    current_index = -1
    pieces: list[tuple[int, object]] = []
    deferred = False
    last_end = 0
    extents = iter(extents)
    while True:
        try:
            offset, data = next(extents)
        except StopIteration:
            break
        except Exception as exc:
            fault.append(exc)
            break
        if offset < last_end:
            raise ValueError(f"extents overlap or go backwards at offset {offset}")
        lazy = _deferred(data)
        view = data if lazy else memoryview(data).cast("B")
        end = offset + len(view)
        if end > size_bytes:
            raise ValueError(f"extent at {offset} ends past the disk ({end} > {size_bytes})")
        last_end = end
        pos = offset
        while pos < end:
            index, within = divmod(pos, BLOCK_SIZE)
            take = min(BLOCK_SIZE - within, end - pos)
            if index != current_index:
                if pieces:
                    yield current_index, pieces, deferred
                current_index, pieces, deferred = index, [], False
            pieces.append((within, view[pos - offset:pos - offset + take]))
            deferred = deferred or lazy
            pos += take
    if pieces:
        yield current_index, pieces, deferred


def reseal_snapshot(store: BlockStore, manifest: Manifest, source_cipher: BlockCipher | None,
                    cipher: BlockCipher, encryption: ManifestEncryption,
                    on_progress: Callable[[int], None] | None = None) -> Manifest:
    """A new snapshot's manifest with ``manifest``'s content, every block sealed with
    ``cipher`` (opened with ``source_cipher`` if the source is encrypted): an encrypted block
    is bound to its snapshot, so a copy that involves encryption cannot share blocks."""
    out = Manifest(size_bytes=manifest.size_bytes, block_size=manifest.block_size,
                   encryption=encryption)
    with store.pack_writer(dedup=False) as pack:
        for index in sorted(manifest.blocks):
            data = store.read_block(manifest, index, source_cipher)
            out.blocks[index] = pack.put(cipher.seal_block(index, data))
            if on_progress is not None:
                on_progress(min(manifest.size_bytes, (index + 1) * manifest.block_size))
    out.shared_blocks = 0
    return out
