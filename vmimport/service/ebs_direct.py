"""The EBS direct read APIs (ListSnapshotBlocks, GetSnapshotBlock): any AWS SDK can read a
snapshot back, block by block, with a SHA-256 checksum per block."""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime, timedelta, timezone

from vmimport.blockstore.store import BlockStore, BlockStoreError
from vmimport.db.models import Snapshot

from .context import Context
from .errors import ApiError

# EBS's error codes are exception names (rest-json protocol).
NOT_FOUND, VALIDATION, INTERNAL = "ResourceNotFoundException", "ValidationException", \
    "InternalServerException"


def _snapshot(ctx: Context, snapshot_id: str) -> Snapshot:
    with ctx.db.read() as session:
        snapshot = session.get(Snapshot, snapshot_id)
    if snapshot is None or snapshot.account_id != ctx.account_id:
        raise ApiError(NOT_FOUND, f"The snapshot '{snapshot_id}' does not exist", 404)
    if snapshot.state != "completed":
        raise ApiError(VALIDATION, f"The snapshot '{snapshot_id}' is {snapshot.state}")
    return snapshot


def _manifest(ctx: Context, snapshot: Snapshot):
    try:
        return BlockStore(ctx.settings.blocks_dir).read_manifest(snapshot.id)
    except BlockStoreError as exc:
        raise ApiError(INTERNAL, str(exc), 500) from None


def list_snapshot_blocks(ctx: Context, params: dict) -> dict:
    snapshot = _snapshot(ctx, params["SnapshotId"])
    manifest = _manifest(ctx, snapshot)
    max_results = params.get("MaxResults") or 10000
    if not 100 <= max_results <= 10000:
        raise ApiError(VALIDATION, "MaxResults must be between 100 and 10000")
    start = params.get("StartingBlockIndex") or 0
    token = params.get("NextToken")
    if token:
        try:
            start = max(start, int(base64.urlsafe_b64decode(token).decode()))
        except (ValueError, UnicodeDecodeError):
            raise ApiError(VALIDATION, "The NextToken is not valid") from None
    indexes = sorted(i for i in manifest.blocks if i >= start)
    page = indexes[:max_results]
    result = {
        "Blocks": [{"BlockIndex": i, "BlockToken": manifest.blocks[i]} for i in page],
        "ExpiryTime": datetime.now(timezone.utc) + timedelta(days=7),
        "VolumeSize": snapshot.volume_size, "BlockSize": manifest.block_size,
    }
    if len(indexes) > max_results:
        result["NextToken"] = base64.urlsafe_b64encode(str(page[-1] + 1).encode()).decode()
    return result


def get_snapshot_block(ctx: Context, params: dict) -> dict:
    snapshot = _snapshot(ctx, params["SnapshotId"])
    manifest = _manifest(ctx, snapshot)
    index, token = params["BlockIndex"], params.get("BlockToken")
    digest = manifest.blocks.get(index)
    if digest is None or token != digest:
        raise ApiError(VALIDATION, f"The block token for block {index} of {snapshot.id} is not "
                       "valid (list the blocks with ListSnapshotBlocks to get tokens)")
    try:
        data = BlockStore(ctx.settings.blocks_dir).get_block(digest)
    except BlockStoreError as exc:
        raise ApiError(INTERNAL, str(exc), 500) from None
    checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
    return {"BlockData": data, "DataLength": len(data), "Checksum": checksum,
            "ChecksumAlgorithm": "SHA256"}
