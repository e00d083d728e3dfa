"""Packs on the object store: the blocks of one write appended to objects, one per writing thread
(as in ``packs.py``), each uploaded in multipart parts as it fills: never a temporary file of
the volume, and at most one part (``PART_SIZE`` plus a block) in memory per writing thread.

A pack is invisible until its upload completes (``finish``), so nothing ever refers to an
unfinished one; a failed write aborts its uploads and deletes the packs it had completed. While
an upload is open, a small marker object ``uploads/<pack>-<pid>@<host>`` holds its upload id,
so that the writer's host can abort the uploads of its dead processes when a worker starts
(``ObjectBlockStore.reclaim_own_leftovers``); others are aborted by gc after the grace period.

Dedup, given a ``shared_index.SharedDedupIndex`` (the database every machine shares): a batch's
fingerprints are looked up in one query; a candidate's pack is held (``SharedDedupIndex.hold``,
which gc respects) and its block read back by ranged GET and compared before its place is
reused, so a fingerprint collision (xxh3 is no cryptographic hash) never costs data. The
blocks a write stores enter the index once its packs are complete. Holds on the packs a write
uses are renewed every ``HOLD_RENEW_SECONDS`` while it runs, so gc leaves them alone.
Twins within one write cannot be compared by reading back (their pack is not readable until
it completes): each block this write stores keeps its blake3 digest too (about 8 GB/s here),
and a later block with the same fingerprint is shared only if its blake3 digest is the same.
Not shared: a block whose fingerprint a crafted block took first in the index is stored again
each time.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

from botocore.exceptions import ClientError

from .interface import FinishedOnSuccess
from .leftovers import owner_tag
from .manifest import BLOCK_SIZE, BlockRef, BlockStoreError
from .object_client import ObjectLocation, is_missing, store_errors
from .packs import ZERO_BLOCK, block_digest, digest_pieces, join_pieces, strong_digest

log = logging.getLogger("vmimport.blockstore")

# 8 MiB parts: above S3's 5 MiB minimum, 16 blocks (one batch of ``writer.BATCH_BLOCKS``).
PART_SIZE = 8 * 1024 * 1024
# A pack is completed and a new one begun after this many parts (8 GiB): within S3's 10,000
# parts, and gc reclaims packs whole, so smaller packs free space sooner.
PACK_PARTS = 1024
# Parts of one pack being uploaded at once (by the write's upload threads) while its writer
# fills the next: sent by the writer itself, SeaweedFS on loopback sat idle while it filled
# the next part. Memory per writing thread: (this + 1) parts, and botocore's copy of each in
# flight. 2 in flight on 4 threads peaked at 287-293 MiB RSS importing the bench disk into
# SeaweedFS, 1 on 2 threads at 235-239 MiB (issue 15's limit is 256), no slower: 8.4-9.5 s
# against 9.3-9.9 s (bench.object_store's import, 2026-12-04).
PARTS_IN_FLIGHT = 1
UPLOAD_THREADS = 2  # per write
# Holds are renewed this often while a write runs: far below gc's grace (hours).
HOLD_RENEW_SECONDS = 300

_ZEROS = memoryview(ZERO_BLOCK)  # slices of it are views: padding copies nothing twice


class ObjectPackWriter(FinishedOnSuccess):
    """``interface.PackSink`` on the object store. A context manager: on success every pack's
    upload is completed; on an exception all are aborted and completed packs deleted."""

    def __init__(self, client, location: ObjectLocation, index=None, dedup: bool = True,
                 read_block=None):
        """``index``: a ``SharedDedupIndex`` (None: no holds, no dedup); ``read_block(ref)``:
        the stored bytes of a block, checked (the store's ``get_block``)."""
        self._client = client
        self._location = location
        self._index = index
        self._dedup = dedup and index is not None and read_block is not None
        self._read_block = read_block
        self._shared: set[str] = set()  # other writes' packs this one reuses blocks of (held)
        self._mine: dict[str, BlockRef] = {}  # blocks this write stored, by digest (first)
        self._strong: dict[str, str] = {}  # ... and their blake3 digests, for their twins
        self._held_at = time.monotonic()
        self._lock = threading.Lock()
        self._open = True
        self._uploads: dict[int, _PackUpload] = {}  # by writing thread
        self._completed: list[str] = []  # packs this write finished (rolled over) already
        self.blocks_written = 0
        self._senders = ThreadPoolExecutor(UPLOAD_THREADS, thread_name_prefix="pack-upload")

    def put_blocks(self, blocks: list[list[tuple[int, memoryview]]]) -> list[BlockRef]:
        """Store the blocks not stored already (see the module docstring)."""
        self._renew_holds()
        if not self._dedup:
            upload = self._upload()
            self._count_written(len(blocks))
            return [upload.append(pieces, BLOCK_SIZE) for pieces in blocks]
        digests = [digest_pieces(pieces) for pieces in blocks]
        refs = self._reuse(digests, blocks)
        upload = None
        for n in [n for n, ref in enumerate(refs) if ref is None]:
            strong = strong_digest(blocks[n])
            with self._lock:
                twin = self._mine.get(digests[n])
                if twin is not None and self._strong[digests[n]] == strong:
                    refs[n] = twin  # stored earlier in this write: the same bytes (blake3)
                    continue
            upload = upload or self._upload()
            self._count_written(1)
            refs[n] = ref = upload.append(blocks[n], BLOCK_SIZE, digests[n])
            with self._lock:
                if ref.digest not in self._mine:
                    self._mine[ref.digest] = ref
                    self._strong[ref.digest] = strong
        return refs

    def _reuse(self, digests: list[str], blocks) -> list[BlockRef | None]:
        """For each block: the place of a stored block with the same bytes, or None."""
        try:
            found = self._index.find_many(digests)
            with self._lock:
                wanted = {ref.pack for ref in found.values()} - self._shared
            if wanted:
                held = self._index.hold(wanted)
                with self._lock:
                    self._shared |= held
        except Exception as exc:  # noqa: BLE001 - costs the dedup of these blocks, never data
            log.warning("dedup lookup failed (%s); this write stores every block", exc)
            self._dedup = False  # once: not a failing query (and a warning) per batch
            return [None] * len(blocks)
        with self._lock:
            shared = set(self._shared)
        refs: list[BlockRef | None] = []
        for digest, pieces in zip(digests, blocks):
            ref = found.get(digest)
            if ref is not None and (ref.pack not in shared or ref.length != BLOCK_SIZE
                                    or not self._same_bytes(ref, pieces)):
                ref = None
            refs.append(ref)
        return refs

    def _same_bytes(self, ref: BlockRef, pieces) -> bool:
        try:
            return self._read_block(ref) == join_pieces(pieces)
        except BlockStoreError:  # its pack is gone or damaged: store the block again
            return False

    def _renew_holds(self, force: bool = False) -> None:
        """Tell gc again that this write uses its packs; fail if one it reuses was taken."""
        if self._index is None or (not force and time.monotonic() - self._held_at
                                   < HOLD_RENEW_SECONDS):
            return
        self._held_at = time.monotonic()
        with self._lock:
            shared = set(self._shared)
            own = {upload.name for upload in self._uploads.values()} | set(self._completed)
        try:
            held = self._index.hold(shared | own)
        except Exception as exc:  # noqa: BLE001 - the database is away: try again later
            log.warning("could not renew this write's pack holds (%s)", exc)
            return
        if shared - held:
            raise BlockStoreError(
                f"pack(s) {', '.join(sorted(shared - held))} this write reuses blocks of were "
                f"collected from {self._location} while it ran (hold older than gc's grace)")

    def _count_written(self, blocks: int) -> None:
        with self._lock:
            self.blocks_written += blocks

    def put(self, data) -> BlockRef:
        """Store one sealed block as it is."""
        self._count_written(1)
        return self._upload().append([(0, memoryview(data).cast("B"))], len(data))

    def _upload(self) -> "_PackUpload":
        """This thread's open pack; a new one on its first block, or once the last is full."""
        me = threading.get_ident()
        with self._lock:
            if not self._open:
                raise ValueError("the pack is closed")
            upload = self._uploads.get(me)
        if upload is not None and upload.parts_done < PACK_PARTS:
            return upload
        if upload is not None:
            upload.complete()
        if self._index is not None:
            name = uuid.uuid4().hex
            try:
                self._index.hold_new(name)  # before the upload: gc never sees it unheld
            except Exception as exc:  # noqa: BLE001 - gc's grace on its age still covers it
                log.warning("pack %s: could not register it (%s)", name, exc)
        else:
            name = None
        fresh = _PackUpload(self._client, self._location, self._senders, name)
        with self._lock:
            if upload is not None:
                self._completed.append(upload.name)
            self._uploads[me] = fresh
            if not self._open:  # aborted meanwhile by another thread
                fresh.abort()
                raise ValueError("the pack is closed")
        return fresh

    def _close(self) -> bool:
        """Whether this call closed the write (it was open)."""
        with self._lock:
            was_open, self._open = self._open, False
        return was_open

    def finish(self) -> None:
        if not self._close():
            return
        try:
            for upload in self._uploads.values():
                upload.complete()
                self._completed.append(upload.name)
        except BaseException:
            self._drop()
            raise
        finally:
            self._senders.shutdown()
        self._record()

    def _record(self) -> None:
        """Enter this write's blocks in the dedup index, and renew its holds (its manifest,
        written next, is what keeps the packs from then on)."""
        if self._index is None:
            return
        try:
            self._renew_holds(force=True)
            if self._dedup and self._mine:
                self._index.add(self._mine.values())
        except BlockStoreError:
            raise
        except Exception as exc:  # noqa: BLE001 - costs the dedup of these blocks, never data
            log.warning("pack(s) %s: their blocks could not enter the dedup index (%s)",
                        ", ".join(self._completed), exc)

    def abort(self) -> None:
        if not self._close():
            return
        try:
            self._drop()
        finally:
            self._senders.shutdown()

    def _drop(self) -> None:
        """Abort what is open, delete what was completed: best effort, gc finishes the job."""
        for upload in self._uploads.values():
            try:
                upload.abort()
            except Exception as exc:  # noqa: BLE001 - the write's own error matters more
                log.warning("pack %s: its upload could not be aborted (%s); gc will",
                            upload.name, exc)
        for name in self._completed:
            try:
                with store_errors(self._location, f"deleting pack {name}"):
                    self._client.delete_object(Bucket=self._location.bucket,
                                               Key=self._location.key("packs", name))
            except Exception as exc:  # noqa: BLE001
                log.warning("pack %s of a failed write could not be deleted (%s); gc will",
                            name, exc)
        if self._index is not None:
            try:
                self._index.forget([u.name for u in self._uploads.values()] + self._completed)
            except Exception as exc:  # noqa: BLE001
                log.warning("the packs of a failed write stay registered (%s)", exc)


class _PackUpload:
    """One pack object being written by one thread: blocks fill a part buffer, each full part
    is handed to ``senders`` (``PARTS_IN_FLIGHT`` at most; None: sent by the caller)."""

    def __init__(self, client, location: ObjectLocation,
                 senders: ThreadPoolExecutor | None = None, name: str | None = None):
        self._senders = senders
        self._in_flight: deque[Future] = deque()
        self._client = client
        self._location = location
        self.name = name or uuid.uuid4().hex
        self.key = location.key("packs", self.name)
        self.marker = location.key("uploads", self.name + owner_tag())
        bucket = location.bucket
        with store_errors(location, f"starting pack {self.name}"):
            self.upload_id = client.create_multipart_upload(Bucket=bucket,
                                                            Key=self.key)["UploadId"]
        try:
            with store_errors(location, f"marking pack {self.name} as being written"):
                client.put_object(Bucket=bucket, Key=self.marker, Body=self.upload_id.encode())
        except BaseException:
            self.abort()
            raise
        self._buffer = bytearray()
        self._start = 0  # offset in the pack of the buffer's first byte
        self._parts: list[dict] = []
        self._closed = False

    @property
    def parts_done(self) -> int:
        return len(self._parts)

    def append(self, pieces: list[tuple[int, memoryview]], length: int,
               digest: str | None = None) -> BlockRef:
        """Add a block given as pieces [(offset within it, data)], zeros elsewhere."""
        if self._closed:
            raise ValueError("the pack is closed")
        at = len(self._buffer)
        if digest is not None:
            pass  # fingerprinted already (for the dedup lookup)
        elif len(pieces) == 1 and pieces[0][0] == 0 and len(pieces[0][1]) == length:
            digest = block_digest(pieces[0][1])  # whole (and sealed blocks, not 512 KiB)
        else:
            digest = digest_pieces(pieces)  # 512 KiB, zeros between and after the pieces
        pos = 0
        for within, piece in pieces:
            if within > pos:
                self._buffer += _ZEROS[:within - pos]
            self._buffer += piece
            pos = within + len(piece)
        self._buffer += _ZEROS[:length - pos]
        ref = BlockRef(digest, self.name, self._start + at, length)
        if len(self._buffer) >= PART_SIZE:
            self._upload_part()
        return ref

    def _upload_part(self) -> None:
        number, body = len(self._parts) + 1, self._buffer
        self._parts.append({"PartNumber": number})
        self._start += len(body)
        self._buffer = bytearray()
        if self._senders is None:
            self._send(number, body)
            return
        self._in_flight.append(self._senders.submit(self._send, number, body))
        while len(self._in_flight) > PARTS_IN_FLIGHT:
            self._in_flight.popleft().result()

    def _send(self, number: int, body: bytearray) -> None:
        with store_errors(self._location, f"uploading part {number} of pack {self.name}"):
            answer = self._client.upload_part(Bucket=self._location.bucket, Key=self.key,
                                              UploadId=self.upload_id, PartNumber=number,
                                              Body=body)
        self._parts[number - 1]["ETag"] = answer["ETag"]

    def _wait_for_parts(self) -> None:
        while self._in_flight:
            self._in_flight.popleft().result()

    def complete(self) -> None:
        if self._closed:
            return
        if self._buffer or not self._parts:
            self._upload_part()
        self._wait_for_parts()
        with store_errors(self._location, f"completing pack {self.name}"):
            self._client.complete_multipart_upload(
                Bucket=self._location.bucket, Key=self.key, UploadId=self.upload_id,
                MultipartUpload={"Parts": self._parts})
        self._closed = True
        self._remove_marker()

    def abort(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._buffer = bytearray()
        for sending in self._in_flight:  # an abort while they run would leave their parts
            sending.cancel()
            try:
                sending.result()
            except Exception:  # noqa: BLE001 - aborting anyway
                pass
        self._in_flight.clear()
        with store_errors(self._location, f"aborting pack {self.name}"):
            try:
                self._client.abort_multipart_upload(Bucket=self._location.bucket, Key=self.key,
                                                    UploadId=self.upload_id)
            except ClientError as exc:
                if not is_missing(exc):  # gone already (gc, or a retried abort): fine
                    raise
        self._remove_marker()

    def _remove_marker(self) -> None:
        with store_errors(self._location, f"unmarking pack {self.name}"):
            self._client.delete_object(Bucket=self._location.bucket, Key=self.marker)

