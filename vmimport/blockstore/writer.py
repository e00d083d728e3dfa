"""Turn a guest disk's extents into a snapshot: cut into 512 KiB blocks, drop all-zero blocks,
hash and store the others on a small thread pool (hashing and file writes release the GIL)."""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable

from .crypto import BlockCipher
from .store import BLOCK_SIZE, ZERO_BLOCK, BlockStore, Manifest, ManifestEncryption


PROGRESS_EVERY = 16  # blocks (8 MiB) between progress calls: the callback is not free


def write_snapshot(store: BlockStore, size_bytes: int,
                   extents: Iterable[tuple[int, bytes | memoryview]],
                   on_progress: Callable[[int], None] | None = None,
                   threads: int = 2, max_in_flight: int = 8,
                   cipher: BlockCipher | None = None,
                   encryption: ManifestEncryption | None = None) -> Manifest:
    """Consume ``extents`` ((guest offset, data), increasing, non-overlapping) and return the
    manifest of the stored blocks. ``on_progress(guest_bytes_done)`` is called after each block;
    it may raise (e.g. ``ImportCancelled``) to stop the work.

    With ``cipher`` (and the ``encryption`` record that goes into the manifest), every block is
    sealed before it is stored, so no plaintext block ever reaches the store."""
    if (cipher is None) != (encryption is None):
        raise ValueError("give both cipher and encryption, or neither")
    manifest = Manifest(size_bytes=size_bytes, encryption=encryption)

    def store_block(index: int, pieces: list) -> str:
        if cipher is not None:  # sealing needs the block in one piece
            return store.put_block(cipher.seal_block(index, _join(pieces)))
        return store.put_block_pieces(pieces)

    pending: deque[tuple[int, Future]] = deque()

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="blockstore") as pool:
        def drain_one() -> None:
            index, future = pending.popleft()
            manifest.blocks[index] = future.result()

        for index, pieces in _blocks(size_bytes, extents):
            # A memcmp per piece (`==` on a memoryview compares element by element); the gaps
            # between pieces are zeros already.
            if not all(ZERO_BLOCK.startswith(piece) for _, piece in pieces):
                pending.append((index, pool.submit(store_block, index, pieces)))
                while len(pending) > max_in_flight:
                    drain_one()
            if on_progress is not None and index % PROGRESS_EVERY == 0:
                on_progress(min(size_bytes, (index + 1) * BLOCK_SIZE))
        if on_progress is not None:
            on_progress(size_bytes)
        while pending:
            drain_one()
    return manifest


def _join(pieces: list[tuple[int, memoryview]]) -> bytes:
    """The whole 512 KiB block: the pieces at their places, zeros between and after."""
    block = bytearray(BLOCK_SIZE)
    for within, piece in pieces:
        block[within:within + len(piece)] = piece
    return bytes(block)


def _blocks(size_bytes: int, extents: Iterable[tuple[int, bytes | memoryview]]):
    """Yield (block index, pieces) for every block that any extent touches, in order; pieces
    are [(offset within the block, memoryview)], increasing — views into the extents, never
    copies (hashing and writing take them one by one)."""
    current_index = -1
    pieces: list[tuple[int, memoryview]] = []
    last_end = 0
    for offset, data in extents:
        if offset < last_end:
            raise ValueError(f"extents overlap or go backwards at offset {offset}")
        view = memoryview(data).cast("B")
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
                    yield current_index, pieces
                current_index, pieces = index, []
            pieces.append((within, view[pos - offset:pos - offset + take]))
            pos += take
    if pieces:
        yield current_index, pieces
