"""Packs on the object store: the blocks of one write appended to objects, one per writing thread
(as in ``packs.py``), each uploaded in multipart parts as it fills: never a temporary file of
the volume, and at most one part (``PART_SIZE`` plus a block) in memory per writing thread.

A pack is invisible until its upload completes (``finish``), so nothing ever refers to an
unfinished one; a failed write aborts its uploads and deletes the packs it had completed. While
an upload is open, a small marker object ``uploads/<pack>-<pid>@<host>`` holds its upload id,
so that the writer's host can abort the uploads of its dead processes when a worker starts
(``ObjectBlockStore.reclaim_own_leftovers``); others are aborted by gc after the grace period.

No dedup yet: every block is stored (``dedup`` is ignored). Sharing a block needs an index
that every machine sees (the database) and a byte compare by ranged GET; until then blocks
are never looked up, which costs space, never data.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

from botocore.exceptions import ClientError

from .interface import FinishedOnSuccess
from .leftovers import owner_tag
from .manifest import BLOCK_SIZE, BlockRef
from .object_client import ObjectLocation, is_missing, store_errors
from .packs import ZERO_BLOCK, block_digest, digest_pieces

log = logging.getLogger("vmimport.blockstore")

# 8 MiB parts: above S3's 5 MiB minimum, 16 blocks (one batch of ``writer.BATCH_BLOCKS``).
PART_SIZE = 8 * 1024 * 1024
# A pack is completed and a new one begun after this many parts (8 GiB): within S3's 10,000
# parts, and gc reclaims packs whole, so smaller packs free space sooner.
PACK_PARTS = 1024
# Parts of one pack being uploaded at once (by the write's upload threads) while its writer
# fills the next: one request at a time per writer left SeaweedFS on loopback mostly idle
# waiting for the next part. Memory per writing thread: (this + 1) parts.
PARTS_IN_FLIGHT = 2
UPLOAD_THREADS = 4  # per write

_ZEROS = memoryview(ZERO_BLOCK)  # slices of it are views: padding copies nothing twice


class ObjectPackWriter(FinishedOnSuccess):
    """``interface.PackSink`` on the object store. A context manager: on success every pack's
    upload is completed; on an exception all are aborted and completed packs deleted."""

    def __init__(self, client, location: ObjectLocation):
        self._client = client
        self._location = location
        self._lock = threading.Lock()
        self._open = True
        self._uploads: dict[int, _PackUpload] = {}  # by writing thread
        self._completed: list[str] = []  # packs this write finished (rolled over) already
        self._senders = ThreadPoolExecutor(UPLOAD_THREADS, thread_name_prefix="pack-upload")

    def put_blocks(self, blocks: list[list[tuple[int, memoryview]]]) -> list[BlockRef]:
        """Store every block (no dedup yet: see the module docstring)."""
        upload = self._upload()
        return [upload.append(pieces, BLOCK_SIZE) for pieces in blocks]

    def put(self, data) -> BlockRef:
        """Store one sealed block as it is."""
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
        fresh = _PackUpload(self._client, self._location, self._senders)
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


class _PackUpload:
    """One pack object being written by one thread: blocks fill a part buffer, each full part
    is handed to ``senders`` (``PARTS_IN_FLIGHT`` at most; None: sent by the caller)."""

    def __init__(self, client, location: ObjectLocation,
                 senders: ThreadPoolExecutor | None = None):
        self._senders = senders
        self._in_flight: deque[Future] = deque()
        self._client = client
        self._location = location
        self.name = uuid.uuid4().hex
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

    def append(self, pieces: list[tuple[int, memoryview]], length: int) -> BlockRef:
        """Add a block given as pieces [(offset within it, data)], zeros elsewhere."""
        if self._closed:
            raise ValueError("the pack is closed")
        at = len(self._buffer)
        if len(pieces) == 1 and pieces[0][0] == 0 and len(pieces[0][1]) == length:
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

