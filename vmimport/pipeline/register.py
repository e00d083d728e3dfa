"""The last stage of ImportImage: an AMI over the task's snapshots, named after the task."""

from __future__ import annotations

from sqlalchemy.orm import Session

from vmimport.db.models import BlockDeviceMapping, Image, ImportTask, Snapshot
from vmimport.db.ids import new_id

ROOT_DEVICE = "/dev/sda1"


def device_names(requested: list[str | None]) -> list[str]:
    """The user's DeviceName where given; otherwise /dev/sda1 for the boot volume and
    /dev/sdb, /dev/sdc, ... for the others, skipping names already taken."""
    taken = {name for name in requested if name}
    spare = (f"/dev/sd{c}" for c in "bcdefghijklmnopqrstuvwxyz" if f"/dev/sd{c}" not in taken)
    names = []
    for position, name in enumerate(requested):
        if name:
            names.append(name)
        elif position == 0 and ROOT_DEVICE not in taken:
            names.append(ROOT_DEVICE)
        else:
            names.append(next(spare))
    return names


def platform_billing(platform: str | None, license_type: str | None,
                     usage_operation: str | None) -> tuple[str, str]:
    """(PlatformDetails, UsageOperation) as EC2 shows them on the AMI."""
    if platform == "Windows":
        usage = usage_operation or ("RunInstances:0002" if license_type == "AWS"
                                    else "RunInstances:0800")
        return ("Windows" if usage == "RunInstances:0002" else "Windows BYOL"), usage
    return "Linux/UNIX", usage_operation or "RunInstances"


def register_imported_image(session: Session, task: ImportTask, decision=None) -> Image:
    """``decision`` (from inspecting the boot volume) gives the billing details and the
    description AWS writes on imported AMIs when the user gave none."""
    names = device_names([disk.device_name for disk in task.disks])
    if decision is not None:
        details, usage = decision.platform_details, decision.usage_operation
    else:
        details, usage = platform_billing(task.platform, task.license_type,
                                          task.usage_operation)
    description = task.description or (decision.description if decision else None)
    image = Image(
        id=new_id("image"), account_id=task.account_id, name=task.id,
        description=description, state="available",
        architecture=task.architecture or "x86_64",
        platform="windows" if task.platform == "Windows" else None,
        platform_details=details, usage_operation=usage, boot_mode=task.boot_mode,
        root_device_name=names[0], virtualization_type="hvm", hypervisor="xen",
        ena_support=True, source_task_id=task.id)
    for position, (disk, name) in enumerate(zip(task.disks, names)):
        snapshot = session.get(Snapshot, disk.snapshot_id)
        image.mappings.append(BlockDeviceMapping(
            position=position, device_name=name, snapshot_id=snapshot.id,
            volume_size=snapshot.volume_size, volume_type="gp2",
            delete_on_termination=True, encrypted=snapshot.encrypted,
            kms_key_id=snapshot.kms_key_id))
        disk.device_name = name
    session.add(image)
    task.image_id = image.id
    return image
