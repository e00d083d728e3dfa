"""What every export writer shares: the disk it writes (``DiskBlocks``: its size and which
blocks hold data, as a snapshot's manifest knows before any byte is read), where the bytes go
(``Sink``: written strictly front to back, so an S3 multipart upload can take them as they
come), and the RAW writer, the simplest of them.

Writers read each allocated block once, in order, and never hold more than a bounded number of
blocks; a block not listed as allocated is zeros and is never read.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, Protocol

Progress = Callable[[int], None]  # guest bytes done so far; may raise to stop the export


class DiskBlocks(Protocol):
    size: int        # the guest disk's size in bytes
    block_size: int  # bytes per block (a snapshot's: 512 KiB)

    def allocated(self) -> list[int]:
        """Indices of the blocks that may hold data, increasing; every other block is zeros."""
        ...

    def read(self, index: int) -> bytes:
        """Block ``index`` (``block_size`` bytes; the last block of the disk may be shorter)."""
        ...


class Sink(Protocol):
    def write(self, data: bytes | memoryview) -> None:
        ...

    def skip(self, length: int) -> None:
        """``length`` zero bytes: a file may leave a hole, a stream must write them."""
        ...

    @property
    def position(self) -> int:
        ...


READ_BATCH = 8  # blocks a read-ahead task reads (4 MiB): few tasks, each cheap to hand over
READ_AHEAD = 2  # batches read ahead of the writes (8 MiB held, besides the one being written)


def read_ahead(disk: DiskBlocks, indices: Iterable[int]) -> Iterator[tuple[int, bytes]]:
    """(index, ``disk.read(index)``) for ``indices``, in order, read by one thread up to
    ``READ_AHEAD`` batches ahead of the caller: a read (pread, digest check, decryption)
    overlaps the writing of the blocks before it instead of waiting for it, as qemu-img's
    reads overlap its writes."""
    def read_batch(batch: list[int]) -> list[tuple[int, bytes]]:
        return [(index, disk.read(index)) for index in batch]

    with ThreadPoolExecutor(1, thread_name_prefix="export-read") as pool:
        pending: deque = deque()
        batch: list[int] = []
        for index in indices:
            batch.append(index)
            if len(batch) == READ_BATCH:
                pending.append(pool.submit(read_batch, batch))
                batch = []
                if len(pending) > READ_AHEAD:
                    yield from pending.popleft().result()
        if batch:
            pending.append(pool.submit(read_batch, batch))
        while pending:
            yield from pending.popleft().result()


def zero_filled(block: bytes, length: int) -> bytes:
    """``block`` padded with zeros to ``length`` (a short last block)."""
    return block if len(block) >= length else block + bytes(length - len(block))


def write_raw(disk: DiskBlocks, sink: Sink, on_progress: Progress | None = None) -> None:
    """The guest disk byte for byte; unallocated blocks are skipped (holes where the sink can)."""
    done = 0
    for index, data in read_ahead(disk, disk.allocated()):
        start = index * disk.block_size
        if start > done:
            sink.skip(start - done)
        data = data[:disk.size - start]
        sink.write(data)
        done = start + len(data)
        if on_progress is not None:
            on_progress(done)
    if disk.size > done:
        sink.skip(disk.size - done)
    if on_progress is not None:
        on_progress(disk.size)
