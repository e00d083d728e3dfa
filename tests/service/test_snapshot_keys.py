"""``service.snapshot_keys``: one owner of snapshot keys, one error vocabulary; the EBS direct
reads go through it too, so a manifest whose wrapped data key was made under another KMS key
than the one it names is refused there as well."""

from __future__ import annotations

import pytest

from vmimport.blockstore.manifest import BLOCK_SIZE, Manifest, ManifestEncryption
from vmimport.service import ebs_direct, kms, snapshot_keys
from vmimport.service.context import Context
from vmimport.service.errors import ApiError

from .conftest import ACCOUNT
from .test_delete_after_commit import _snapshot

SNAPSHOT = "snap-0123456789abcdef0"


def _keys(ctx: Context, count: int) -> list[tuple[str, str]]:
    with ctx.db.write() as session:
        return [(key.id, key.arn) for key in
                (kms.new_key(session, ctx.settings, ACCOUNT, ctx.region) for _ in range(count))]


def test_task_key_seals_and_the_snapshot_reads_back(ctx):
    (key_id, arn), = _keys(ctx, 1)
    key = snapshot_keys.resolve_task_key(ctx.db, ctx.settings, ACCOUNT, key_id)
    assert key.arn == arn
    sealing = key.sealing(ctx.db, ctx.settings, SNAPSHOT)
    manifest = Manifest(size_bytes=BLOCK_SIZE, encryption=sealing.record)
    cipher = snapshot_keys.snapshot_cipher(ctx.db, ctx.settings, manifest, ACCOUNT)
    block = sealing.cipher.seal_block(0, b"x" * BLOCK_SIZE)
    assert cipher.open_block(0, block) == b"x" * BLOCK_SIZE
    with ctx.db.write() as session:
        session.get(kms.KmsKey, key_id).state = "Disabled"
    with pytest.raises(snapshot_keys.KeyCannotEncrypt,
                       match=f"The KMS key {arn} cannot be used to encrypt the snapshots: "
                             f"{arn} is disabled"):
        key.sealing(ctx.db, ctx.settings, "snap-1")
    with pytest.raises(snapshot_keys.SnapshotUnreadable,
                       match=f"the encrypted snapshot {SNAPSHOT} cannot be read: .* disabled"):
        snapshot_keys.snapshot_cipher(ctx.db, ctx.settings, manifest, ACCOUNT)


def test_a_wrapped_key_of_another_kms_key_is_refused_by_the_ebs_reads(ctx):
    (named_id, named_arn), (other_id, other_arn) = _keys(ctx, 2)
    _snapshot(ctx, SNAPSHOT)
    other = snapshot_keys.resolve_task_key(ctx.db, ctx.settings, ACCOUNT, other_id)
    sealing = other.sealing(ctx.db, ctx.settings, SNAPSHOT)
    # The manifest claims named_arn, but its data key was wrapped by the other key.
    forged = ManifestEncryption(SNAPSHOT, named_arn, sealing.record.wrapped_key)
    manifest = Manifest(size_bytes=BLOCK_SIZE, encryption=forged)
    with ctx.blocks.pack_writer(dedup=False) as pack:
        manifest.blocks[0] = pack.put(sealing.cipher.seal_block(0, bytes(BLOCK_SIZE)))
    ctx.blocks.write_manifest(SNAPSHOT, manifest)
    with pytest.raises(snapshot_keys.SnapshotUnreadable, match=f"not wrapped by {named_arn}"):
        snapshot_keys.snapshot_cipher(ctx.db, ctx.settings, manifest, ACCOUNT)
    with pytest.raises(ApiError) as err:
        ebs_direct.get_snapshot_block(ctx, {"SnapshotId": SNAPSHOT, "BlockIndex": 0,
                                            "BlockToken": manifest.blocks[0].digest})
    assert err.value.code == "AccessDeniedException"
    assert f"The snapshot {SNAPSHOT} is encrypted with {named_arn}, which cannot be used" in \
        err.value.message and other_arn not in err.value.message
