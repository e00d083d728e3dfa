"""CopyImage within this region: what Packer's amazon-import post-processor calls to give the
imported AMI its name (and, with ``ami_encrypt``, to encrypt it).

A plaintext copy's snapshots share the source's blocks (a manifest copy), so it is available
at once whatever the image's size. A copy that involves encryption (``Encrypted``/``KmsKeyId``,
or an encrypted source) re-seals every block under a data key of its own, as AWS re-encrypts:
the call checks the keys and answers with the image ``pending``; a ``copy-image`` job
(``pipeline/run_copy.py``) writes the blocks and makes it ``available`` (or ``failed``, with a
StateReason).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from vmimport.blockstore.manifest import BLOCK_SIZE
from vmimport.db.ids import new_id
from vmimport.db.models import BlockDeviceMapping, Image, Snapshot
from vmimport.jobs import queue

from . import snapshot_keys
from .context import Context
from .errors import ApiError, invalid_value, missing, not_found
from .id_syntax import check_ids
from .import_rules import check_tag_specifications
from .kms import DEFAULT_EBS_ALIAS
from .register_image import check_image_name, check_name_free
from .sharing import may_use_image
from .tag_store import set_tags, tags_for

JOB_KIND = "copy-image"


@dataclass
class _Volume:
    """One volume of the copy: its source snapshot and the new snapshot's id and key."""

    mapping: BlockDeviceMapping
    source: Snapshot
    snapshot_id: str
    key_arn: str | None = None   # the copy's KMS key when it is encrypted


def copy_image(ctx: Context, params: dict) -> dict:
    for name in ("Name", "SourceImageId", "SourceRegion"):
        if not params.get(name):
            raise missing(name)
    name = params["Name"]
    check_image_name(name)
    check_ids("ami", params["SourceImageId"])
    if params["SourceRegion"] != ctx.region:
        raise invalid_value("SourceRegion", params["SourceRegion"],
                            f"This server holds only region {ctx.region}; cross-region copies "
                            "are not supported.")
    if params.get("KmsKeyId") and not params.get("Encrypted"):
        raise ApiError("InvalidParameterDependency",
                       "The parameter KmsKeyId requires the parameter Encrypted to be set.")
    tags = check_tag_specifications(params, "image") if params.get("TagSpecifications") else []
    with ctx.db.read() as session:
        source = _source_image(session, ctx, params["SourceImageId"])
        volumes = [_Volume(m, session.get(Snapshot, m.snapshot_id), new_id("snapshot"))
                   for m in source.mappings]
        if params.get("Encrypted") is False and any(v.source.encrypted for v in volumes):
            raise ApiError("InvalidParameterCombination",
                           f"The image {source.id} has encrypted snapshots: an encrypted "
                           "snapshot cannot be copied to an unencrypted one")
        check_name_free(session, ctx.account_id, name)
        session.expunge_all()  # used after the session: plain values from here on
    for volume in volumes:
        if params.get("Encrypted") or volume.source.encrypted:
            volume.key_arn = _copy_key(ctx, params, volume, source.id)
    ctx.would_succeed()  # DryRun: every check is behind us; the block I/O is not
    if any(volume.key_arn for volume in volumes):  # re-sealed by a job: pending until then
        with ctx.db.write() as session:
            image_id = _record_copy(session, ctx, params, name, source, volumes, tags,
                                    state="pending")
            queue.enqueue(session, JOB_KIND, image_id)
        queue.notify_workers()
        return {"ImageId": image_id}
    written: list[str] = []
    try:
        for volume in volumes:  # block I/O: no transaction is open
            ctx.blocks.write_manifest(volume.snapshot_id,
                                      ctx.blocks.read_manifest(volume.source.id))
            written.append(volume.snapshot_id)
        with ctx.db.write() as session:
            image_id = _record_copy(session, ctx, params, name, source, volumes, tags)
    except BaseException:
        for snapshot_id in written:  # the rows were never committed: drop the manifests
            ctx.blocks.delete_manifest(snapshot_id)
        raise
    return {"ImageId": image_id}


def _source_image(session, ctx: Context, image_id: str) -> Image:
    image = session.get(Image, image_id)
    # Owned, shared with the caller or public: all may be copied (into the caller's account).
    if image is None or not may_use_image(image, ctx.account_id):
        raise not_found("InvalidAMIID.NotFound", image_id)
    if image.state != "available":
        raise ApiError("IncorrectState", f"The image {image.id} is {image.state}, not available")
    return image


def _copy_key(ctx: Context, params: dict, volume: _Volume, source_image_id: str) -> str:
    """The ARN of the key the copy of ``volume`` is sealed under, once the caller is known
    to be able to use it and to read the source: refusals come from the call, not the job."""
    # The key asked for; else an encrypted source's own key; else the account's EBS default.
    ref = params.get("KmsKeyId") or (volume.source.kms_key_id if volume.source.encrypted
                                     else None) or DEFAULT_EBS_ALIAS
    try:
        key = snapshot_keys.resolve_task_key(ctx.db, ctx.settings, ctx.account_id, ref)
        snapshot_keys.snapshot_cipher(ctx.db, ctx.settings,
                                      ctx.blocks.read_manifest(volume.source.id),
                                      ctx.account_id)
    except snapshot_keys.SnapshotKeyError as exc:
        raise ApiError("InvalidParameterValue" if isinstance(exc, snapshot_keys.KeyCannotEncrypt)
                       else "AuthFailure", f"CopyImage of {source_image_id}: {exc}") from None
    return key.arn


def _record_copy(session, ctx: Context, params: dict, name: str, source: Image,
                 volumes: list[_Volume], tags: list[dict], state: str = "available") -> str:
    _source_image(session, ctx, source.id)  # still there, still ours to copy
    check_name_free(session, ctx.account_id, name)
    now = datetime.now(timezone.utc)
    copy = Image(id=new_id("image"), account_id=ctx.account_id, name=name,
                 description=params.get("Description", source.description),
                 state=state, architecture=source.architecture,
                 platform=source.platform, platform_details=source.platform_details,
                 usage_operation=source.usage_operation, boot_mode=source.boot_mode,
                 root_device_name=source.root_device_name,
                 virtualization_type=source.virtualization_type,
                 hypervisor=source.hypervisor, ena_support=source.ena_support,
                 source_image_id=source.id, source_region=ctx.region, created_at=now)
    for volume in volumes:
        snapshot, mapping = volume.source, volume.mapping
        encrypted = volume.key_arn is not None
        session.add(Snapshot(
            id=volume.snapshot_id, account_id=ctx.account_id,
            description=f"Copied for DestinationAmi {copy.id} from SourceAmi "
                        f"{source.id} for SourceSnapshot {snapshot.id}",
            state="completed" if state == "available" else "pending",
            volume_size=snapshot.volume_size, size_bytes=snapshot.size_bytes,
            stored_bytes=snapshot.stored_bytes, encrypted=encrypted,
            # a plaintext copy is the source's manifest; an encrypted one re-seals every block
            shared_blocks=0 if encrypted else snapshot.stored_bytes // BLOCK_SIZE,
            kms_key_id=volume.key_arn, source_snapshot_id=snapshot.id, started_at=now,
            completed_at=now if state == "available" else None))
        copy.mappings.append(BlockDeviceMapping(
            position=mapping.position, device_name=mapping.device_name,
            snapshot_id=volume.snapshot_id, volume_size=mapping.volume_size,
            volume_type=mapping.volume_type,
            delete_on_termination=mapping.delete_on_termination, encrypted=encrypted,
            kms_key_id=volume.key_arn))
    session.add(copy)
    session.flush()
    if params.get("CopyImageTags"):
        own = tags_for(session, ctx.account_id, [source.id]).get(source.id, {})
        tags = [{"Key": k, "Value": v} for k, v in own.items()] + tags
    if tags:
        set_tags(session, ctx.account_id, copy.id, "image", tags)
    return copy.id
