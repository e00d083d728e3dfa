"""RegisterImage: an AMI over snapshots the caller already has — the second half of the
"ImportSnapshot + RegisterImage" path that distro builders use for byte-exact images."""

from __future__ import annotations

import re

from sqlalchemy import select

from vmimport.db.ids import new_id
from vmimport.db.models import BlockDeviceMapping, Image, Snapshot

from .context import Context
from .errors import ApiError, invalid_value, missing, not_found
from .import_rules import check_tag_specifications
from .tag_store import set_tags

_NAME = re.compile(r"^[A-Za-z0-9()\[\] ./\-'@_]{3,128}$")
_DEVICE = re.compile(r"^/dev/(sd[a-z][0-9]*|xvd[a-z]{1,2}[0-9]*|nvme\d+n\d+)$")
ARCHITECTURES = {"i386", "x86_64", "arm64"}


def check_name_free(session, account_id: str, name: str) -> None:
    """InvalidAMIName.Duplicate when the account already has an AMI called ``name``."""
    taken = session.scalar(select(Image.id).where(Image.account_id == account_id,
                                                  Image.name == name))
    if taken:
        raise ApiError("InvalidAMIName.Duplicate",
                       f"AMI name {name} is already in use by AMI {taken}")


def check_image_name(name: str) -> None:
    if not _NAME.match(name):
        raise invalid_value("Name", name, "AMI names are 3-128 characters of letters, digits, "
                            "spaces and ( ) [ ] . / - ' @ _")


def register_image(ctx: Context, params: dict) -> dict:
    name = params.get("Name")
    if not name:
        raise missing("Name")
    check_image_name(name)
    if params.get("ImageLocation"):
        raise ApiError("InvalidParameterCombination",
                       "ImageLocation (instance-store bundles in S3) is not supported; register "
                       "EBS snapshots with BlockDeviceMappings")
    architecture = params.get("Architecture") or "x86_64"
    if architecture not in ARCHITECTURES:
        raise invalid_value("Architecture", architecture, "Valid values: arm64, i386, x86_64.")
    mappings = params.get("BlockDeviceMappings") or []
    ebs_mappings = [m for m in mappings if m.get("Ebs")]
    if not ebs_mappings:
        raise missing("BlockDeviceMapping.1.Ebs.SnapshotId")
    root = params.get("RootDeviceName") or ebs_mappings[0].get("DeviceName")
    tags = check_tag_specifications(params, "image")
    with ctx.db.write() as session:
        check_name_free(session, ctx.account_id, name)
        image = Image(id=new_id("image"), account_id=ctx.account_id, name=name,
                      description=params.get("Description"), state="available",
                      architecture=architecture, boot_mode=params.get("BootMode"),
                      root_device_name=root,
                      virtualization_type=params.get("VirtualizationType") or "hvm",
                      ena_support=bool(params.get("EnaSupport", True)))
        devices = set()
        for n, mapping in enumerate(ebs_mappings, 1):
            device = mapping.get("DeviceName")
            if not device or not _DEVICE.match(device):
                raise invalid_value(f"BlockDeviceMapping.{n}.DeviceName", device,
                                    "Use a name like /dev/sda1 or /dev/xvda.")
            if device in devices:
                raise ApiError("InvalidBlockDeviceMapping",
                               f"The device name {device} is used twice")
            devices.add(device)
            ebs = mapping["Ebs"]
            snapshot_id = ebs.get("SnapshotId")
            if not snapshot_id:
                raise missing(f"BlockDeviceMapping.{n}.Ebs.SnapshotId")
            snapshot = session.get(Snapshot, snapshot_id)
            if snapshot is None or snapshot.account_id != ctx.account_id:
                raise not_found("InvalidSnapshot.NotFound", snapshot_id)
            size = ebs.get("VolumeSize") or snapshot.volume_size
            if size < snapshot.volume_size:
                raise invalid_value(f"BlockDeviceMapping.{n}.Ebs.VolumeSize", size,
                                    f"The snapshot {snapshot_id} needs at least "
                                    f"{snapshot.volume_size} GiB.")
            image.mappings.append(BlockDeviceMapping(
                position=n - 1, device_name=device, snapshot_id=snapshot_id, volume_size=size,
                volume_type=ebs.get("VolumeType") or "gp2",
                delete_on_termination=ebs.get("DeleteOnTermination", True),
                encrypted=snapshot.encrypted))
        if root not in devices:
            raise invalid_value("RootDeviceName", root,
                                "The root device must be one of the block device mappings.")
        session.add(image)
        session.flush()
        if tags:
            set_tags(session, ctx.account_id, image.id, "image", tags)
    return {"ImageId": image.id}
