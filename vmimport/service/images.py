"""DescribeImages, DeregisterImage, DescribeSnapshots, DeleteSnapshot."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import delete, or_, select

from vmimport.db.models import BlockDeviceMapping, DeregisteredImage, Image, Snapshot

from .context import Context
from . import sharing
from .errors import ApiError, missing, not_found
from .id_syntax import check_ids
from .listing import bool_str, describe_owned
from .tag_store import delete_all_tags, tag_list

TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.000Z"


def _render_image(image: Image, tags: dict) -> dict:
    out = {
        "ImageId": image.id, "ImageLocation": f"{image.account_id}/{image.name}",
        "State": image.state, "OwnerId": image.account_id,
        "CreationDate": image.created_at.strftime(TIME_FORMAT),
        "Public": sharing.is_public(image.launch_permissions), "Architecture": image.architecture, "ImageType": "machine",
        "Name": image.name, "RootDeviceType": "ebs", "RootDeviceName": image.root_device_name,
        "VirtualizationType": image.virtualization_type, "Hypervisor": image.hypervisor,
        "EnaSupport": image.ena_support, "PlatformDetails": image.platform_details,
        "UsageOperation": image.usage_operation, "SriovNetSupport": "simple",
        "Tags": tag_list(tags), "DeregistrationProtection": protection_state(image),
        "BlockDeviceMappings": [
            {"DeviceName": m.device_name,
             "Ebs": {"SnapshotId": m.snapshot_id, "VolumeSize": m.volume_size,
                     "VolumeType": m.volume_type,
                     "DeleteOnTermination": m.delete_on_termination,
                     "Encrypted": m.encrypted,
                     **({"KmsKeyId": m.kms_key_id} if m.kms_key_id else {})}}
            for m in image.mappings],
    }
    for key, value in (("Description", image.description), ("Platform", image.platform),
                       ("BootMode", image.boot_mode), ("SourceImageId", image.source_image_id),
                       ("SourceImageRegion", image.source_region),
                       ("DeprecationTime", image.deprecation_time
                        and image.deprecation_time.strftime(TIME_FORMAT))):
        if value is not None:
            out[key] = value
    if image.state_reason_code:
        out["StateReason"] = {"Code": image.state_reason_code,
                              "Message": image.state_reason_message or ""}
    return out


def protection_state(image: Image) -> str:
    """DeregistrationProtection as DescribeImages words it."""
    if image.deregistration_protection:
        return image.deregistration_protection
    if image.protected_until is not None and image.protected_until > datetime.now(timezone.utc):
        return f"disabled-until {image.protected_until.strftime(TIME_FORMAT)}"
    return "disabled"


def _image_attributes(image: Image, name: str):
    maps = image.mappings
    simple = {
        "architecture": [image.architecture], "boot-mode": [image.boot_mode],
        "description": [image.description], "ena-support": [bool_str(image.ena_support)],
        "hypervisor": [image.hypervisor], "image-id": [image.id], "image-type": ["machine"],
        "is-public": [bool_str(sharing.is_public(image.launch_permissions))],
        "name": [image.name], "owner-id": [image.account_id],
        "platform": [image.platform], "root-device-name": [image.root_device_name],
        "root-device-type": ["ebs"], "state": [image.state],
        "virtualization-type": [image.virtualization_type],
        "creation-date": [image.created_at.strftime(TIME_FORMAT)],
        "platform-details": [image.platform_details], "usage-operation": [image.usage_operation],
        "sriov-net-support": ["simple"], "source-image-id": [image.source_image_id],
        "source-image-region": [image.source_region],
        "manifest-location": [f"{image.account_id}/{image.name}"],
        "free-tier-eligible": ["false"], "image-allowed": ["true"],
        # Members these images never have: a filter on them matches nothing.
        "owner-alias": [], "kernel-id": [], "ramdisk-id": [], "product-code": [],
        "product-code.type": [], "source-instance-id": [], "state-reason-code": [],
        "state-reason-message": [],
        "block-device-mapping.device-name": [m.device_name for m in maps],
        "block-device-mapping.snapshot-id": [m.snapshot_id for m in maps],
        "block-device-mapping.volume-size": [str(m.volume_size) for m in maps],
        "block-device-mapping.volume-type": [m.volume_type for m in maps],
        "block-device-mapping.encrypted": [bool_str(m.encrypted) for m in maps],
        "block-device-mapping.delete-on-termination":
            [bool_str(m.delete_on_termination) for m in maps],
    }
    return simple.get(name)


def _listed_as_deprecated(params: dict, account_id: str) -> list:
    """EC2 leaves other accounts' deprecated images out unless IncludeDeprecated or ImageIds
    asks for them; an owner always sees its own. (A clause for the query, if any.)"""
    if params.get("IncludeDeprecated") or params.get("ImageIds"):
        return []
    return [or_(Image.account_id == account_id, Image.deprecation_time.is_(None),
                Image.deprecation_time > datetime.now(timezone.utc))]


def describe_images(ctx: Context, params: dict) -> dict:
    check_ids("ami", params.get("ImageIds"))
    return describe_owned(
        ctx, params, model=Image, ids=params.get("ImageIds"),
        not_found=lambda unknown: _images_not_found(ctx, unknown),
        attributes=_image_attributes, result_key="Images",
        render=lambda session, image, tags: _render_image(image, tags),
        scope=sharing.visible_images(ctx.account_id),
        where=_listed_as_deprecated(params, ctx.account_id),
        **sharing.narrowing(Image, params.get("Owners"), params.get("ExecutableUsers"),
                            ctx.account_id, lambda image: image.launch_permissions))


# How long a deregistered AMI's id answers InvalidAMIID.Unavailable rather than NotFound.
REMEMBERED = timedelta(days=1)


def _images_not_found(ctx: Context, unknown) -> ApiError:
    """EC2's refusal for ids that name no image: ``InvalidAMIID.Unavailable`` when all were
    deregistered by the caller within the day, else ``InvalidAMIID.NotFound``."""
    unknown = sorted(unknown)
    with ctx.db.read() as session:
        gone = set(session.scalars(select(DeregisteredImage.image_id).where(
            DeregisteredImage.image_id.in_(unknown),
            DeregisteredImage.account_id == ctx.account_id)))
    if gone and gone == set(unknown):
        return ApiError("InvalidAMIID.Unavailable",
                        f"The image id '[{', '.join(unknown)}]' is no longer available")
    return not_found("InvalidAMIID.NotFound", unknown)


def deregister_image(ctx: Context, params: dict) -> dict:
    image_id = params.get("ImageId")
    if not image_id:
        raise missing("ImageId")
    check_ids("ami", image_id)
    deleted: list[str] = []
    with ctx.db.write() as session:
        image = sharing.owned_image(session, image_id, ctx.account_id)
        state = protection_state(image)
        if state != "disabled":
            raise ApiError("InvalidParameterValue",
                           f"Image {image_id} has deregistration protection enabled ({state}); "
                           "disable it with DisableImageDeregistrationProtection first")
        snapshot_ids = [m.snapshot_id for m in image.mappings]
        session.delete(image)
        delete_all_tags(session, ctx.account_id, image_id)
        now = datetime.now(timezone.utc)
        session.execute(delete(DeregisteredImage).where(
            DeregisteredImage.deregistered_at < now - REMEMBERED))
        session.add(DeregisteredImage(image_id=image_id, account_id=ctx.account_id,
                                      deregistered_at=now))
        session.flush()
        result: dict = {"Return": True}
        if params.get("DeleteAssociatedSnapshots"):
            outcomes = []
            for sid in snapshot_ids:
                still_used = session.scalar(select(BlockDeviceMapping.id).where(
                    BlockDeviceMapping.snapshot_id == sid).limit(1))
                snapshot = session.get(Snapshot, sid)
                if snapshot is None:
                    outcomes.append({"SnapshotId": sid, "ReturnCode": "client-error"})
                elif still_used is not None:
                    outcomes.append({"SnapshotId": sid, "ReturnCode": "skipped"})
                else:
                    _delete_snapshot_row(session, ctx, snapshot)
                    deleted.append(sid)
                    outcomes.append({"SnapshotId": sid, "ReturnCode": "success"})
            result["DeleteSnapshotResults"] = outcomes
    _delete_manifests(ctx, deleted)
    return result


def _render_snapshot(snapshot: Snapshot, tags: dict) -> dict:
    out = {
        "SnapshotId": snapshot.id, "VolumeId": snapshot.volume_id, "State": snapshot.state,
        "StartTime": snapshot.started_at, "Progress": "100%" if snapshot.state == "completed"
        else "0%", "OwnerId": snapshot.account_id, "VolumeSize": snapshot.volume_size,
        "Encrypted": snapshot.encrypted, "StorageTier": "standard", "Tags": tag_list(tags),
        # The data held (blocks that are not all zeros), not the volume's size, as on EBS.
        "FullSnapshotSizeInBytes": snapshot.stored_bytes,
    }
    if snapshot.description is not None:
        out["Description"] = snapshot.description
    if snapshot.kms_key_id:
        out["KmsKeyId"] = snapshot.kms_key_id
    if snapshot.completed_at is not None:
        out["CompletionTime"] = snapshot.completed_at
    return out


def _snapshot_attributes(snapshot: Snapshot, name: str):
    return {
        "description": [snapshot.description], "encrypted": [bool_str(snapshot.encrypted)],
        "owner-id": [snapshot.account_id], "snapshot-id": [snapshot.id],
        "status": [snapshot.state], "volume-id": [snapshot.volume_id],
        "volume-size": [str(snapshot.volume_size)], "storage-tier": ["standard"],
        "progress": ["100%" if snapshot.state == "completed" else "0%"],
        "start-time": [snapshot.started_at.strftime(TIME_FORMAT)],
    }.get(name)


def describe_snapshots(ctx: Context, params: dict) -> dict:
    check_ids("snap", params.get("SnapshotIds"))
    return describe_owned(
        ctx, params, model=Snapshot, ids=params.get("SnapshotIds"),
        not_found=lambda unknown: not_found("InvalidSnapshot.NotFound", sorted(unknown)),
        attributes=_snapshot_attributes, result_key="Snapshots",
        render=lambda session, snapshot, tags: _render_snapshot(snapshot, tags),
        scope=sharing.visible_snapshots(ctx.account_id), page_bounds=(5, 1000),
        **sharing.narrowing(Snapshot, params.get("OwnerIds"), params.get("RestorableByUserIds"),
                            ctx.account_id, lambda snapshot: snapshot.volume_permissions))


def delete_snapshot(ctx: Context, params: dict) -> dict:
    snapshot_id = params.get("SnapshotId")
    if not snapshot_id:
        raise missing("SnapshotId")
    check_ids("snap", snapshot_id)
    with ctx.db.write() as session:
        snapshot = sharing.owned_snapshot(session, snapshot_id, ctx.account_id)
        user = session.scalar(select(BlockDeviceMapping.image_id).where(
            BlockDeviceMapping.snapshot_id == snapshot_id).limit(1))
        if user is not None:
            raise ApiError("InvalidSnapshot.InUse",
                           f"The snapshot {snapshot_id} is currently in use by {user}")
        _delete_snapshot_row(session, ctx, snapshot)
    _delete_manifests(ctx, [snapshot_id])
    return {}


def _delete_snapshot_row(session, ctx: Context, snapshot: Snapshot) -> None:
    """The row and its tags; the manifest goes once this is committed (``_delete_manifests``)."""
    session.delete(snapshot)
    delete_all_tags(session, ctx.account_id, snapshot.id)


def _delete_manifests(ctx: Context, snapshot_ids: list[str]) -> None:
    """After the commit that deleted their rows: a commit that fails leaves the snapshots
    whole. (Blocks stay until garbage collection: other snapshots may share them.)"""
    for snapshot_id in snapshot_ids:
        ctx.blocks.delete_manifest(snapshot_id)
