"""Pack files: the blocks of one write (an import's volume, a re-sealed copy) appended to a
few files -- one per thread that stores blocks -- instead of one file per block.

Why: creating a file costs the kernel far more than writing 512 KiB into an open one — on the
benchmark machine 2,433 empty files took 0.63 s of system time, writing the same 1.2 GiB into
one file 0.22 s. A pack is written under a hidden name (``.partial-<name>-<pid>@<host>``,
locked by its writer: see ``leftovers``) and renamed when the write finishes, so nothing ever
refers to an unfinished pack.

Each writing thread appends to a pack of its own: buffered writes to one file are serialised on
its inode lock, so two threads writing one pack took turns (see ``_PackFile``). Offsets are
reserved under a lock (the dedup lookups and this write's own digests are shared) and written
outside it. The zero stretches of a partly-zero block are not written: the file
holds a hole there, which reads as zeros; nor are the all-zero 64 KiB stretches inside a stored
block (a quarter of the bench disk's stored blocks are half zeros): fewer bytes to copy into the
page cache, less disk used — what ``qemu-img convert`` does at 4 KiB.

Blocks are found again by fingerprint -- xxh3-128 of the 512 KiB block -- and shared only once
their bytes compare equal to the stored block's. The key used to be a blake3 digest, trusted
alone as cryptographic hashes are, but hashing every block with it was a quarter of an
import's CPU (blake3 ~6 GB/s on one core, xxh3 ~45 GB/s; see BENCHMARKS.md). xxh3 is no
cryptographic hash: a crafted image can collide with a block it expects someone else to
store; so a fingerprint only names a candidate, and a candidate is read back (one 512 KiB pread,
only when a block is seen again) and compared before its place is reused. A collision never
costs data. Nor does it cost dedup for long: honest blocks collide with probability 2^-128, so
a block whose fingerprint leads to other bytes is taken to share it with a crafted block, and
is found by its blake3 digest instead (computed for such blocks only); otherwise a crafted
block stored first under a popular block's fingerprint would keep every copy of that block
from being shared. Within a
write, a block's twin is found once the twin's bytes are in the file; twins stored by the two
threads at the same moment are both kept. The fingerprint also checks every read for damage,
as the digest did; blake3 digests in older manifests are still checked as blake3.

A finished pack's blocks enter the dedup index on a thread of their own, a moment later
(``RECORD_DELAY``), so an import does not wait for it nor share the machine with it while it
finishes: inserting the 2,433 entries of the bench disk takes 14 ms into an empty index and
60 ms into one of 200,000 (each entry dirties another page of the B-tree), and it grows with
the store. ``wait_for_index`` starts and waits for this process's recordings: a new pack
writer calls it, so one process always finds what it stored before. An entry may still name a
pack that is gone (recorded after ``vmimport gc`` deleted the pack of a failed import, or an
index that outlived its packs); lookups check that the pack exists and ignore such entries.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import uuid
from contextlib import contextmanager
from pathlib import Path

import blake3
import xxhash

from vmimport.sparse_writes import nonzero_parts, write_segments

from .index import DedupIndex
from .interface import BlockStoreFull, FinishedOnSuccess
from .leftovers import PARTIAL_PREFIX, hold, owner_tag
from .manifest import BLOCK_SIZE, BlockRef

log = logging.getLogger("vmimport.blockstore")

ALIGN = 4096  # sealed blocks are a little over 512 KiB: keep every block page-aligned

ZERO_BLOCK = bytes(BLOCK_SIZE)
_ZERO_VIEW = memoryview(ZERO_BLOCK)


def block_digest(data) -> str:
    """The fingerprint of a stored block: xxh3-128, 32 hex digits (see the module docstring)."""
    return xxhash.xxh3_128_hexdigest(data)


def digest_matches(data, digest: str) -> bool:
    """Whether ``data`` is the block ``digest`` was taken of: a fingerprint, or the blake3
    digest (64 hex digits) that stores written before 2026-11-27 recorded."""
    if len(digest) == 64:
        return blake3.blake3(data, max_threads=1).hexdigest() == digest
    return block_digest(data) == digest


@contextmanager
def out_of_space_is_full(location: str):
    """Turn a full disk or quota (ENOSPC, EDQUOT) while writing into ``BlockStoreFull``, which
    names the store: a bare OSError tells the user nothing."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise BlockStoreFull(location) from exc
        raise


class PackWriter(FinishedOnSuccess):
    """Appends blocks to new packs in ``packs_dir``, one per thread that stores blocks. Use as
    a context manager: on success the packs get their final names and their blocks enter the
    dedup index; on an exception (a cancelled or failed import) every partial pack is deleted.

    With an ``index_path``, a block whose digest is stored already (in the index, or earlier in
    this write) is not written again: its existing ``BlockRef`` is returned."""

    def __init__(self, packs_dir: Path, index_path: Path | None = None,
                 location: str | None = None):
        self._dir = packs_dir
        self._location = location or str(packs_dir)  # for BlockStoreFull
        if index_path is not None:
            wait_for_index()
        self._index = DedupIndex(index_path) if index_path is not None else None
        self._lock = threading.Lock()
        self._open = True
        self._files: dict[int, _PackFile] = {}  # by writing thread (see _PackFile)
        # Blocks of this write, by the key they are found by (the first of each): a fingerprint,
        # or a blake3 digest (see put_blocks); each entry's digest is its key (for the index).
        self._written: dict[str, BlockRef] = {}
        self._flushed: set[str] = set()  # ... of those, the ones whose bytes are in the file
        self._partials: dict[str, Path] = {}  # this write's packs, by name: where they are now
        self._packs_seen: set[str] = set()  # other packs found on disk (gc waits for imports)
        self.blocks_written = 0

    def put_blocks(self, blocks: list[list[tuple[int, memoryview]]]) -> list[BlockRef]:
        """Store 512 KiB blocks, each given as pieces [(offset within the block, data)],
        increasing, with zeros elsewhere: fingerprinted piece by piece (no copy into one
        buffer), looked up in one query, and written with as few system calls as the layout
        allows. Several blocks at a time, because per-block costs (a lookup, a write call,
        Python itself) add up at 2,000+ blocks a GiB. A block is shared with one stored
        already only once their bytes compare equal (``_same_bytes``)."""
        digests = [digest_pieces(pieces) for pieces in blocks]
        refs = self._matches(digests, blocks)
        # A candidate with other bytes is a fingerprint collision: never by chance (2^-128),
        # so a crafted block holds that fingerprint. Such blocks go by their blake3 digest
        # instead, or the crafted block would keep every later twin of theirs from dedup.
        strong = {n: strong_digest(blocks[n]) for n, ref in enumerate(refs) if ref is False}
        if strong:
            found = self._matches(list(strong.values()), [blocks[n] for n in strong])
            for n, ref in zip(strong, found):
                refs[n] = ref and BlockRef(digests[n], ref.pack, ref.offset, ref.length)
        writes = []
        mine = []
        with self._lock:
            self._check_open()
            here: dict[str, tuple[BlockRef, list]] = {}  # new blocks of this batch, by key
            for n, (digest, pieces) in enumerate(zip(digests, blocks)):
                if refs[n]:
                    continue
                key = strong.get(n, digest)  # what the block is found by
                same = here.get(key)
                if same is not None and join_pieces(same[1]) == join_pieces(pieces):
                    refs[n] = same[0]
                    continue
                refs[n] = ref = self._reserve(digest, BLOCK_SIZE)
                if same is None:
                    here[key] = ref, pieces
                    entry = ref if key == digest else BlockRef(key, ref.pack, ref.offset,
                                                               ref.length)
                    if self._written.setdefault(key, entry) is entry:
                        mine.append(key)
                writes += [(ref.offset + within, part)
                           for within, piece in pieces
                           for within, part in nonzero_parts(within, piece)]
        if writes:
            with out_of_space_is_full(self._location):
                write_segments(self._file().fd, writes)
        if mine:
            with self._lock:
                self._flushed.update(mine)
        return refs

    def _matches(self, keys: list[str], blocks: list[list]) -> list:
        """For each block: the place of a stored block with its ``key`` and its bytes; False
        if the one found under the key holds other bytes; None if none was found."""
        with self._lock:
            self._check_open()
            found = self._known(keys)
            # Blocks of this write count once their bytes are in the file (they are compared).
            found.update((k, self._written[k]) for k in keys if k in self._flushed)
        return [ref if ref is None or self._same_bytes(ref, pieces) else False
                for ref, pieces in ((found.get(k), p) for k, p in zip(keys, blocks))]

    def _same_bytes(self, ref: BlockRef, pieces: list[tuple[int, memoryview]]) -> bool:
        """Whether the block stored at ``ref`` holds exactly ``pieces`` (zeros elsewhere).
        Fingerprints find candidates, not proof: xxh3 is no cryptographic hash, and a crafted
        image could collide with a block it expects another to hold."""
        own = self._partials.get(ref.pack)
        try:
            fd = os.open(own or self._dir / ref.pack, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:  # collected since it was looked up: store the block again
            return False
        try:
            stored = os.pread(fd, ref.length, ref.offset)
        finally:
            os.close(fd)
        if own is not None:  # a block of this write: its trailing zeros may not be written yet
            stored += bytes(ref.length - len(stored))
        return len(stored) == BLOCK_SIZE and all(stored.startswith(view, at)
                                                 for at, view in _spans(pieces))

    def put(self, data) -> BlockRef:
        """Store ``data`` (a sealed block: never equal to another, so never looked up)."""
        digest = block_digest(data)
        with self._lock:
            self._check_open()
            ref = self._reserve(digest, len(data))
        with out_of_space_is_full(self._location):
            write_segments(self._file().fd, [(ref.offset, memoryview(data))])
        return ref

    def _check_open(self) -> None:
        if not self._open:
            raise ValueError("the pack is closed")

    def _file(self) -> "_PackFile":
        """This thread's pack file, created on its first block (call with the lock held, or
        once this thread has reserved a block)."""
        file = self._files.get(threading.get_ident())
        if file is None:
            with out_of_space_is_full(self._location):
                file = _PackFile(self._dir)
            self._files[threading.get_ident()] = file
            self._partials[file.name] = file.partial
        return file

    def _known(self, digests: list[str]) -> dict[str, BlockRef]:
        if self._index is None:
            return {}
        found = self._index.find_many([d for d in digests if d not in self._written])
        for pack in {ref.pack for ref in found.values()} - self._packs_seen:
            if (self._dir / pack).exists():
                self._packs_seen.add(pack)
        return {digest: ref for digest, ref in found.items() if ref.pack in self._packs_seen}

    def _reserve(self, digest: str, length: int) -> BlockRef:
        """A new block's place in this thread's pack (call with the lock held)."""
        self.blocks_written += 1
        file = self._file()
        ref = BlockRef(digest, file.name, file.end, length)
        file.end += -(-length // ALIGN) * ALIGN
        return ref

    def finish(self) -> None:
        """Close the pack files, give them their final names and start recording their
        blocks in the dedup index (see the module's docstring)."""
        if not self._open:
            return
        self._open = False
        recording = False
        try:
            with out_of_space_is_full(self._location):
                for file in self._files.values():
                    file.close()
                for file in self._files.values():
                    file.publish()
            mine = list(self._written.values())
            if mine and self._index is not None:
                _start_recording(self._record, mine)
                recording = True
        except BaseException:
            for file in self._files.values():
                file.discard()
            raise
        finally:
            if not recording:
                self._close_index()

    def _record(self, refs: list[BlockRef]) -> None:
        try:
            self._index.add(refs)
        except Exception as exc:  # costs the dedup of these blocks, never data
            log.warning("pack(s) %s: their blocks could not be added to the dedup index (%s); "
                        "later imports will store them again",
                        ", ".join(sorted({ref.pack for ref in refs})), exc)
        finally:
            self._close_index()

    def abort(self) -> None:
        if not self._open:
            return
        self._open = False
        for file in self._files.values():
            file.discard()
        self._close_index()

    def _close_index(self) -> None:
        if getattr(self, "_index", None) is not None:
            self._index.close()


class _PackFile:
    """One pack file of a ``PackWriter``: each thread that stores blocks appends to a file of
    its own. Buffered writes to one file are serialised on its inode lock (a thread waiting
    there spins: perf once showed 20% of an import's CPU in rwsem_spin_on_owner, hence a lock
    of our own around the writes until then), so with one file the writes of two threads took
    turns; with a file each they run side by side (a small gain: the copies and digests
    around the writes dominate; see BENCHMARKS.md)."""

    def __init__(self, packs_dir: Path):
        self.name = uuid.uuid4().hex
        self.final = packs_dir / self.name
        self.partial = packs_dir / f"{PARTIAL_PREFIX}{self.name}{owner_tag()}"
        self.fd = os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                          0o644)
        try:
            hold(self.fd)  # until closed: gc and restarting workers leave it alone
        except BaseException:
            self.discard()
            raise
        self.end = 0

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            try:
                os.ftruncate(fd, self.end)  # a trailing partly-zero block ends in a hole
            finally:
                os.close(fd)

    def publish(self) -> None:
        os.replace(self.partial, self.final)

    def discard(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)
        self.partial.unlink(missing_ok=True)
        self.final.unlink(missing_ok=True)


# Seconds a finished pack's blocks wait before they enter the dedup index, unless someone needs
# them there sooner (``wait_for_index`` cuts the wait short). Recorded at once, they slowed
# what the import does after its last volume: manifest, snapshot row, inspection and AMI took
# 15-27 ms (median ~25) instead of 14-16 (two series of 7 raw imports of the bench disk each
# way, serve with two workers, the two ways alternated).
RECORD_DELAY = 0.25

_recording: list[tuple[threading.Thread, threading.Event]] = []
_recording_lock = threading.Lock()


def _start_recording(record, refs: list[BlockRef]) -> None:
    # Not a daemon: an interpreter that exits waits for it. Started under the lock, so that
    # wait_for_index never finds it unstarted.
    hurry = threading.Event()

    def later() -> None:
        hurry.wait(RECORD_DELAY)
        record(refs)

    thread = threading.Thread(target=later, name="dedup-index")
    with _recording_lock:
        thread.start()
        _recording.append((thread, hurry))


def wait_for_index() -> None:
    """Return once the packs this process finished so far are in the dedup index (or failed
    to get there, which was logged); their recording starts now if it had not."""
    with _recording_lock:
        pending = list(_recording)
    for _, hurry in pending:
        hurry.set()
    for thread, _ in pending:
        thread.join()
    with _recording_lock:
        _recording[:] = [item for item in _recording if item[0].is_alive()]


def strong_digest(pieces: list[tuple[int, memoryview]]) -> str:
    """blake3 of the whole block: the key of a block whose fingerprint a crafted block holds."""
    return _hexdigest(blake3.blake3(max_threads=1), pieces)


def digest_pieces(pieces: list[tuple[int, memoryview]]) -> str:
    """The fingerprint of the 512 KiB block the pieces make, zeros included, with no copy."""
    return _hexdigest(xxhash.xxh3_128(), pieces)


def _hexdigest(hasher, pieces: list[tuple[int, memoryview]]) -> str:
    for _, view in _spans(pieces):
        hasher.update(view)
    return hasher.hexdigest()


def _spans(pieces: list[tuple[int, memoryview]]):
    """The whole block as (offset, view): the pieces, and views of zeros between and after
    them, in order, without copying anything."""
    pos = 0
    for within, piece in pieces:
        if within > pos:
            yield pos, _ZERO_VIEW[:within - pos]
        yield within, piece
        pos = within + len(piece)
    if pos < BLOCK_SIZE:
        yield pos, _ZERO_VIEW[:BLOCK_SIZE - pos]


def join_pieces(pieces: list[tuple[int, memoryview]]) -> bytes:
    """The whole 512 KiB block: the pieces at their places, zeros between and after."""
    block = bytearray(BLOCK_SIZE)
    for within, piece in pieces:
        block[within:within + len(piece)] = piece
    return bytes(block)
