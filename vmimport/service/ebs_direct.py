"""The EBS direct read APIs (ListSnapshotBlocks, GetSnapshotBlock): any AWS SDK can read a
snapshot back, block by block, with a SHA-256 checksum per block.

Encrypted snapshots read the same way: the manifest's data key is unwrapped by its KMS key
(``snapshot_keys``: it must still be Enabled and be the key the manifest names) and each block
is decrypted and authenticated before it is returned; a block that fails (altered, moved,
damaged) is reported and never returned."""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime, timedelta, timezone

from vmimport.blockstore.manifest import BlockStoreError
from vmimport.db.models import Snapshot

from . import snapshot_keys
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
        return ctx.blocks.read_manifest(snapshot.id)
    except BlockStoreError as exc:
        raise ApiError(INTERNAL, str(exc), 500) from None


def _cipher(ctx: Context, snapshot: Snapshot, manifest):
    """The data-key cipher of an encrypted snapshot (None for a plaintext one)."""
    try:
        return snapshot_keys.snapshot_cipher(ctx.db, ctx.settings, manifest, ctx.account_id)
    except snapshot_keys.SnapshotUnreadable as exc:
        raise ApiError("AccessDeniedException", f"The snapshot {snapshot.id} is encrypted "
                       f"with {exc.key_arn}, which cannot be used: {exc.reason}",
                       403) from None


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
        "Blocks": [{"BlockIndex": i, "BlockToken": manifest.blocks[i].digest} for i in page],
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
    ref = manifest.blocks.get(index)
    if ref is None or token != ref.digest:
        raise ApiError(VALIDATION, f"The block token for block {index} of {snapshot.id} is not "
                       "valid (list the blocks with ListSnapshotBlocks to get tokens)")
    cipher = _cipher(ctx, snapshot, manifest)
    try:
        data = ctx.blocks.read_block(manifest, index, cipher)
    except BlockStoreError as exc:
        raise ApiError(INTERNAL, f"block {index} of {snapshot.id} cannot be returned: {exc}",
                       500) from None
    checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
    return {"BlockData": data, "DataLength": len(data), "Checksum": checksum,
            "ChecksumAlgorithm": "SHA256"}
