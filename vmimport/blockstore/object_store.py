"""The block store's object-store backend (``interface.BlockStore`` in a bucket of any
S3-compatible store), so that workers and API processes on several machines share one store
with no shared filesystem. Chosen by ``blocks_url = "s3://bucket/prefix/"``.

Layout under the prefix::

    packs/<name>                   blocks back to back (``object_packs.py``): multipart uploads
                                   while written, objects once complete
    uploads/<name>-<pid>@<host>    marks a pack being written (holds its upload id)
    manifests/<snapshot-id>        binary manifest (``manifest.py``, as in the file store)

Reads are ranged GETs of one block, checked against its fingerprint every time (and opened
with the snapshot's cipher when encrypted), through a small LRU cache of checked blocks.

Dedup and pack holds live in the service's database (``shared_index``), given one: then gc
is safe while imports run on any machine (it deletes a pack only once no write has held it
for the grace). Packs that manifests use little of are compacted (``compaction``): a pack
taken for it leaves the dedup index at once and is deleted by a gc run after the grace.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from datetime import datetime, timezone

from botocore.exceptions import BotoCoreError, ClientError

from .compaction import PackUsage, compact
from .crypto import plaintext_block
from .interface import GarbageReport, LeftoverReport
from .leftovers import writer_gone
from .manifest import BlockRef, BlockStoreError, Manifest
from .object_client import ObjectLocation, abort_upload, error_code, is_missing, store_errors
from .object_packs import ObjectPackWriter
from .packs import digest_matches

CACHED_BLOCKS = 16  # 8 MiB of checked blocks: EBS readers and inspection come back to a few
READ_ATTEMPTS = 3  # per ranged GET whose body broke off (botocore retries only the request)


class ObjectBlockStore:
    """Packs and manifests as objects under ``location``; ``client`` is a boto3 S3 client
    (``object_client.make_client``), shared by every thread."""

    def __init__(self, client, location: ObjectLocation, index=None):
        """``index``: a ``shared_index.SharedDedupIndex`` (None: no dedup, and gc only while
        no import runs, as for the file store)."""
        self._client = client
        self._index = index
        self._where = location
        self.location = str(location)
        self._cache: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._cache_lock = threading.Lock()

    # -- checks --------------------------------------------------------------------------------

    def check(self) -> None:
        """Raise ``BlockStoreError`` unless the bucket is there and these credentials reach it
        (at server start: a typo should stop it, not the first import)."""
        with store_errors(self._where, "opening the bucket"):
            self._client.head_bucket(Bucket=self._where.bucket)

    # -- blocks --------------------------------------------------------------------------------

    @property
    def gc_safe_during_imports(self) -> bool:
        return self._index is not None

    def pack_writer(self, dedup: bool = True) -> ObjectPackWriter:
        """A new write; ``dedup=False`` for sealed blocks (its packs are still held)."""
        return ObjectPackWriter(self._client, self._where, self._index, dedup, self.get_block)

    def read_block(self, manifest: Manifest, index: int, cipher=None) -> bytes:
        ref = manifest.blocks.get(index)
        if ref is None:
            return bytes(manifest.block_size)
        return plaintext_block(manifest, index, self.get_block(ref), cipher)

    def get_block(self, ref: BlockRef) -> bytes:
        """The stored bytes of ``ref``, checked against its digest."""
        key = (ref.pack, ref.offset)
        with self._cache_lock:
            data = self._cache.get(key)
            if data is not None:
                self._cache.move_to_end(key)
        if data is not None and len(data) == ref.length and digest_matches(data, ref.digest):
            return data
        data = self._ranged_get(ref)
        if len(data) != ref.length or not digest_matches(data, ref.digest):
            raise BlockStoreError(f"block {ref.digest} is damaged (its content in pack "
                                  f"{ref.pack} at offset {ref.offset} in {self.location} "
                                  "no longer matches)")
        with self._cache_lock:
            self._cache[key] = data
            while len(self._cache) > CACHED_BLOCKS:
                self._cache.popitem(last=False)
        return data

    def _ranged_get(self, ref: BlockRef) -> bytes:
        doing = f"reading block {ref.digest} from pack {ref.pack}"
        key = self._where.key("packs", ref.pack)
        for attempt in range(READ_ATTEMPTS):
            with store_errors(self._where, doing):
                try:
                    return self._client.get_object(
                        Bucket=self._where.bucket, Key=key,
                        Range=f"bytes={ref.offset}-{ref.offset + ref.length - 1}",
                    )["Body"].read()
                except ClientError as exc:
                    if is_missing(exc):
                        raise BlockStoreError(
                            f"block {ref.digest} is missing from the block store (pack "
                            f"{ref.pack} is gone from {self.location})") from None
                    if error_code(exc) == "InvalidRange":
                        return b""  # the pack is shorter than the manifest says: damaged
                    raise
                except BotoCoreError:  # the body broke off: botocore retried the request only
                    if attempt + 1 == READ_ATTEMPTS:
                        raise
            time.sleep(0.2 * 2 ** attempt)
        raise AssertionError("unreachable")

    # -- manifests -----------------------------------------------------------------------------

    def _manifest_key(self, snapshot_id: str) -> str:
        return self._where.key("manifests", snapshot_id)

    def write_manifest(self, snapshot_id: str, manifest: Manifest) -> None:
        with store_errors(self._where, f"writing the manifest of {snapshot_id}"):
            self._client.put_object(Bucket=self._where.bucket,
                                    Key=self._manifest_key(snapshot_id), Body=manifest.to_bytes())

    def read_manifest(self, snapshot_id: str) -> Manifest:
        return Manifest.from_bytes(self._manifest_bytes(snapshot_id)).check_belongs_to(snapshot_id)

    def _manifest_bytes(self, snapshot_id: str) -> bytes:
        with store_errors(self._where, f"reading the manifest of {snapshot_id}"):
            try:
                return self._client.get_object(Bucket=self._where.bucket,
                                               Key=self._manifest_key(snapshot_id))["Body"].read()
            except ClientError as exc:
                if is_missing(exc):
                    raise BlockStoreError(f"snapshot {snapshot_id} has no manifest") from None
                raise

    def has_manifest(self, snapshot_id: str) -> bool:
        with store_errors(self._where, f"looking for the manifest of {snapshot_id}"):
            try:
                self._client.head_object(Bucket=self._where.bucket,
                                         Key=self._manifest_key(snapshot_id))
                return True
            except ClientError as exc:
                if is_missing(exc):
                    return False
                raise

    def delete_manifest(self, snapshot_id: str) -> None:
        with store_errors(self._where, f"deleting the manifest of {snapshot_id}"):
            self._client.delete_object(Bucket=self._where.bucket,
                                       Key=self._manifest_key(snapshot_id))

    def manifests_written_before(self, when: float) -> list[str]:
        return [snapshot_id for snapshot_id, entry in self._list("manifests", "listing manifests")
                if entry["LastModified"].timestamp() < when]

    # -- garbage -------------------------------------------------------------------------------

    def _list(self, folder: str, doing: str):
        """Every object under ``<prefix><folder>/``, as (name within the folder, listing entry)."""
        start = self._where.key(folder, "")
        with store_errors(self._where, doing):
            for page in self._client.get_paginator("list_objects_v2").paginate(
                    Bucket=self._where.bucket, Prefix=start):
                for entry in page.get("Contents", []):
                    yield entry["Key"][len(start):], entry

    def collect_garbage(self, leftover_grace_seconds: float,
                        written_before: float | None = None,
                        compact_below: float = 0.0) -> GarbageReport:
        """Delete the packs no manifest refers to once they are older than the grace (a pack
        completed a moment ago may belong to an import about to write its manifest), and abort
        the abandoned uploads (see ``reclaim_own_leftovers``: their writer is gone, or they
        are older than the grace); then compact the packs manifests use at most
        ``compact_below`` of (``compaction``). Packs are listed before manifests are read, so a
        pack completed during the sweep is never seen as unreferenced."""
        reclaimed = self._reclaim_uploads(leftover_grace_seconds)
        cutoff = time.time() - leftover_grace_seconds
        if written_before is not None:
            cutoff = min(cutoff, written_before)
        packs = dict(self._list("packs", "listing packs"))
        usage = PackUsage()
        for snapshot_id, _ in self._list("manifests", "listing manifests"):
            usage.add(snapshot_id, Manifest.from_bytes(self._manifest_bytes(snapshot_id)))
        removed = freed = kept_unused = 0
        idle_since = datetime.fromtimestamp(cutoff, timezone.utc)
        sizes: dict[str, int] = {}
        for name, entry in packs.items():
            if name in usage.blocks:
                sizes[name] = entry["Size"]
                kept_unused += max(0, entry["Size"] - usage.live_bytes(name))
            elif entry["LastModified"].timestamp() <= cutoff and self._released(name,
                                                                                idle_since):
                with store_errors(self._where, f"deleting pack {name}"):
                    self._client.delete_object(Bucket=self._where.bucket, Key=entry["Key"])
                removed += 1
                freed += entry["Size"]
        if self._index is not None:  # rows of packs that are gone (deleted by hand, or ...)
            for name in self._index.idle_packs(idle_since) - packs.keys():
                self._index.release(name, idle_since)
        sparse = usage.sparse(sizes, compact_below)
        if self._index is None:  # gc runs only while no import does: nothing holds a pack
            compacted = compact(self, usage, sparse, sizes)
        else:
            compacted = compact(self, usage, sparse, sizes,
                                lambda pack: self._index.retire(pack, idle_since),
                                self._index.add)
        return GarbageReport(removed, freed, kept_unused, reclaimed, compacted)

    def _released(self, pack: str, idle_since: datetime) -> bool:
        """Whether no write has held ``pack`` since ``idle_since`` (none can from now on)."""
        return self._index is None or self._index.release(pack, idle_since)

    def reclaim_own_leftovers(self) -> LeftoverReport:
        """Abort the uploads of this host's processes that are gone (their marker says whose
        they are): what a worker does when it starts."""
        return self._reclaim_uploads(None)

    def _reclaim_uploads(self, grace_seconds: float | None) -> LeftoverReport:
        removed = freed = 0
        now = datetime.now(timezone.utc)
        marked: set[str] = set()
        for name, entry in list(self._list("uploads", "listing packs being written")):
            pack = name.split("-", 1)[0]
            old = (grace_seconds is not None
                   and (now - entry["LastModified"]).total_seconds() > grace_seconds)
            if not (writer_gone(name) or old):
                marked.add(pack)  # its writer may be alive: leave its upload alone
                continue
            upload_id = self._object_text(entry["Key"])
            if upload_id is not None:
                size = self._abort_upload(pack, upload_id)
                removed, freed = removed + (size is not None), freed + (size or 0)
            with store_errors(self._where, f"deleting the marker of pack {pack}"):
                self._client.delete_object(Bucket=self._where.bucket, Key=entry["Key"])
        if grace_seconds is not None:  # uploads whose marker never got written, or is gone
            for pack, upload_id, initiated in self._open_uploads():
                if pack not in marked and (now - initiated).total_seconds() > grace_seconds:
                    size = self._abort_upload(pack, upload_id)
                    removed, freed = removed + (size is not None), freed + (size or 0)
        return LeftoverReport(removed, freed)

    def _open_uploads(self):
        start = self._where.key("packs", "")
        with store_errors(self._where, "listing unfinished uploads"):
            for page in self._client.get_paginator("list_multipart_uploads").paginate(
                    Bucket=self._where.bucket, Prefix=start):
                for upload in page.get("Uploads", []):
                    yield upload["Key"][len(start):], upload["UploadId"], upload["Initiated"]

    def _object_text(self, key: str) -> str | None:
        with store_errors(self._where, f"reading {key}"):
            try:
                return self._client.get_object(Bucket=self._where.bucket,
                                               Key=key)["Body"].read().decode()
            except ClientError as exc:
                if is_missing(exc):
                    return None
                raise

    def _abort_upload(self, pack: str, upload_id: str) -> int | None:
        """The bytes its parts held, or None if the upload was gone already (completed)."""
        with store_errors(self._where, f"aborting the upload of pack {pack}"):
            return abort_upload(self._client, self._where.bucket, self._where.key("packs", pack),
                                upload_id)
