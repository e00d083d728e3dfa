"""CopyImage within this region: what Packer's amazon-import post-processor calls to give the
imported AMI its name. The copy's snapshots share the source's blocks (a manifest copy), so it
is available at once whatever the image's size."""

from __future__ import annotations

from datetime import datetime, timezone

from vmimport.db.ids import new_id
from vmimport.db.models import BlockDeviceMapping, Image, Snapshot

from .context import Context
from .errors import ApiError, invalid_value, missing, not_found
from .id_syntax import check_ids
from .import_rules import check_tag_specifications
from .register_image import check_image_name, check_name_free
from .sharing import may_use_image
from .tag_store import set_tags, tags_for


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
    if params.get("Encrypted") or params.get("KmsKeyId"):
        raise ApiError("UnsupportedOperation",
                       "CopyImage with Encrypted/KmsKeyId is not supported yet by this server "
                       "(the copy would have to re-encrypt every block); import the disk "
                       "again with Encrypted=true instead")
    tags = check_tag_specifications(params, "image") if params.get("TagSpecifications") else []
    store = ctx.blocks
    now = datetime.now(timezone.utc)
    written: list[str] = []
    try:
        with ctx.db.write() as session:
            source = session.get(Image, params["SourceImageId"])
            # Owned, shared with the caller or public: all may be copied (into the caller's
            # account), as on EC2.
            if source is None or not may_use_image(source, ctx.account_id):
                raise not_found("InvalidAMIID.NotFound", params["SourceImageId"])
            if source.state != "available":
                raise ApiError("IncorrectState",
                               f"The image {source.id} is {source.state}, not available")
            check_name_free(session, ctx.account_id, name)
            copy = Image(id=new_id("image"), account_id=ctx.account_id, name=name,
                         description=params.get("Description", source.description),
                         state="available", architecture=source.architecture,
                         platform=source.platform, platform_details=source.platform_details,
                         usage_operation=source.usage_operation, boot_mode=source.boot_mode,
                         root_device_name=source.root_device_name,
                         virtualization_type=source.virtualization_type,
                         hypervisor=source.hypervisor, ena_support=source.ena_support,
                         source_image_id=source.id, source_region=ctx.region,
                         created_at=now)
            for mapping in source.mappings:
                snapshot = session.get(Snapshot, mapping.snapshot_id)
                if snapshot.encrypted:
                    raise ApiError("UnsupportedOperation",
                                   f"The image {source.id} has encrypted snapshots; copying "
                                   "encrypted images is not supported yet by this server")
                snapshot_id = new_id("snapshot")
                store.write_manifest(snapshot_id, store.read_manifest(snapshot.id))
                written.append(snapshot_id)
                session.add(Snapshot(
                    id=snapshot_id, account_id=ctx.account_id,
                    description=f"Copied for DestinationAmi {copy.id} from SourceAmi "
                                f"{source.id} for SourceSnapshot {snapshot.id}",
                    state="completed", volume_size=snapshot.volume_size,
                    size_bytes=snapshot.size_bytes, stored_bytes=snapshot.stored_bytes,
                    encrypted=False, started_at=now, completed_at=now))
                copy.mappings.append(BlockDeviceMapping(
                    position=mapping.position, device_name=mapping.device_name,
                    snapshot_id=snapshot_id, volume_size=mapping.volume_size,
                    volume_type=mapping.volume_type,
                    delete_on_termination=mapping.delete_on_termination, encrypted=False))
            session.add(copy)
            session.flush()
            if params.get("CopyImageTags"):
                own = tags_for(session, ctx.account_id, [source.id]).get(source.id, {})
                tags = [{"Key": k, "Value": v} for k, v in own.items()] + tags
            if tags:
                set_tags(session, ctx.account_id, copy.id, "image", tags)
    except BaseException:
        for snapshot_id in written:  # the rows rolled back (or never committed): drop them
            store.delete_manifest(snapshot_id)
        raise
    return {"ImageId": copy.id}
