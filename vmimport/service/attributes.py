"""Image and snapshot attributes: Describe/Modify/ResetImageAttribute,
Describe/Modify/ResetSnapshotAttribute, and deregistration protection.

What an EBS-backed AMI of this server has is answered; attributes it cannot have (kernel,
ramdisk, product codes) answer empty, as EC2 does for such an AMI; changes this server cannot
make are refused saying so.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from vmimport.db.models import CreateVolumePermission, Image, LaunchPermission

from . import sharing
from .context import Context
from .errors import ApiError, invalid_value, missing, not_found
from .id_syntax import check_ids
from .images import protection_state

# EC2 keeps a protection "with cooldown" for 24 hours after it is disabled.
PROTECTION_COOLDOWN = timedelta(hours=24)
DEPRECATION_HORIZON = timedelta(days=3653)
_IMAGE_ATTRIBUTES = ("description", "kernel", "ramdisk", "launchPermission", "productCodes",
                     "blockDeviceMapping", "sriovNetSupport", "bootMode", "tpmSupport",
                     "uefiData", "lastLaunchedTime", "imdsSupport", "deregistrationProtection")


def _image_id(params: dict) -> str:
    if not params.get("ImageId"):
        raise missing("ImageId")
    check_ids("ami", params["ImageId"])
    return params["ImageId"]


def _snapshot_id(params: dict) -> str:
    if not params.get("SnapshotId"):
        raise missing("SnapshotId")
    check_ids("snap", params["SnapshotId"])
    return params["SnapshotId"]


def _visible_image(session, ctx: Context, image_id: str) -> Image:
    image = session.get(Image, image_id)
    if image is None or not sharing.may_use_image(image, ctx.account_id):
        raise not_found("InvalidAMIID.NotFound", image_id)
    return image


def describe_image_attribute(ctx: Context, params: dict) -> dict:
    image_id, attribute = _image_id(params), params.get("Attribute")
    if not attribute:
        raise missing("Attribute")
    if attribute not in _IMAGE_ATTRIBUTES:
        raise invalid_value("Attribute", attribute, "Valid values: "
                            + ", ".join(_IMAGE_ATTRIBUTES) + ".")
    with ctx.db.read() as session:
        # Whom an image is shared with is its owner's business only.
        image = (sharing.owned_image(session, image_id, ctx.account_id)
                 if attribute == "launchPermission" else _visible_image(session, ctx, image_id))
        out: dict = {"ImageId": image.id}
        if attribute == "description":
            out["Description"] = {"Value": image.description} if image.description else {}
        elif attribute in ("kernel", "ramdisk"):
            out["KernelId" if attribute == "kernel" else "RamdiskId"] = {}
        elif attribute == "launchPermission":
            out["LaunchPermissions"] = sharing.render_permissions(image.launch_permissions)
        elif attribute == "productCodes":
            out["ProductCodes"] = []
        elif attribute == "blockDeviceMapping":
            out["BlockDeviceMappings"] = [
                {"DeviceName": m.device_name,
                 "Ebs": {"SnapshotId": m.snapshot_id, "VolumeSize": m.volume_size,
                         "VolumeType": m.volume_type, "Encrypted": m.encrypted,
                         "DeleteOnTermination": m.delete_on_termination}}
                for m in image.mappings]
        elif attribute == "sriovNetSupport":
            out["SriovNetSupport"] = {"Value": "simple"}
        elif attribute == "bootMode":
            out["BootMode"] = {"Value": image.boot_mode} if image.boot_mode else {}
        elif attribute == "deregistrationProtection":
            out["DeregistrationProtection"] = {"Value": protection_state(image)}
        else:  # tpmSupport, uefiData, lastLaunchedTime, imdsSupport: never set here
            key = {"tpmSupport": "TpmSupport", "uefiData": "UefiData",
                   "lastLaunchedTime": "LastLaunchedTime", "imdsSupport": "ImdsSupport"}
            out[key[attribute]] = {}
    return out


def modify_image_attribute(ctx: Context, params: dict) -> dict:
    image_id = _image_id(params)
    attribute = params.get("Attribute")
    for name in ("ProductCodes", "OrganizationArns", "OrganizationalUnitArns", "ImdsSupport"):
        if params.get(name):
            raise ApiError("InvalidParameter", f"ModifyImageAttribute {name} is not supported "
                           "by this server; Description and LaunchPermission are")
    description = (params.get("Description") or {}).get("Value")
    if attribute == "description" and description is None:
        description = params.get("Value")
    add, remove = _launch_changes(params, attribute)
    if description is None and not add and not remove:
        raise ApiError("MissingParameter", "ModifyImageAttribute needs Description or "
                       "LaunchPermission (Attribute=description with Value, or "
                       "Attribute=launchPermission with OperationType and UserId/UserGroup)")
    with ctx.db.write() as session:
        image = sharing.owned_image(session, image_id, ctx.account_id)
        if description is not None:
            if len(description) > 255:
                raise invalid_value("Description", description, "At most 255 characters.")
            image.description = description
        if add or remove:
            sharing.change_permissions(
                image.launch_permissions,
                lambda user, group: LaunchPermission(user_id=user, group_name=group),
                add, remove, "LaunchPermission", any(m.encrypted for m in image.mappings))
    return {}


def _launch_changes(params: dict, attribute: str | None) -> tuple[list, list]:
    """LaunchPermission.Add/Remove, or the older OperationType + UserId.N/UserGroup.N form."""
    legacy = ([{"UserId": u} for u in params.get("UserIds") or []]
              + [{"Group": g} for g in params.get("UserGroups") or []])
    if legacy and attribute not in (None, "launchPermission"):
        raise invalid_value("Attribute", attribute, "UserId and UserGroup go with "
                            "Attribute=launchPermission.")
    return _permission_changes(params.get("LaunchPermission"), legacy,
                               params.get("OperationType"))


def _permission_changes(changes: dict | None, legacy: list[dict],
                        operation: str | None) -> tuple[list, list]:
    """(add, remove): the Add/Remove structure plus the legacy grantees under OperationType."""
    changes = changes or {}
    add, remove = list(changes.get("Add") or []), list(changes.get("Remove") or [])
    if legacy and operation is None and (add or remove):
        # Packer sends both forms, the grantees in UserId.N and in LaunchPermission.Add, and
        # no OperationType: EC2 takes the structure.
        return add, remove
    if legacy:
        if operation not in ("add", "remove"):
            raise invalid_value("OperationType", operation, "Valid values: add, remove.")
        (add if operation == "add" else remove).extend(legacy)
    return add, remove


def reset_image_attribute(ctx: Context, params: dict) -> dict:
    return _reset(ctx, params.get("Attribute"), "launchPermission", "launch_permissions",
                  lambda session: sharing.owned_image(session, _image_id(params),
                                                      ctx.account_id))


def _reset(ctx: Context, attribute: str | None, resettable: str, collection: str,
           owned) -> dict:
    """Reset*Attribute: the one resettable attribute, the owner's permissions cleared."""
    if attribute != resettable:
        raise invalid_value("Attribute", attribute, f"Only {resettable} can be reset.")
    with ctx.db.write() as session:
        row = owned(session)  # held: a collection outliving its row cannot be changed
        getattr(row, collection).clear()
    return {}


def describe_snapshot_attribute(ctx: Context, params: dict) -> dict:
    snapshot_id, attribute = _snapshot_id(params), params.get("Attribute")
    if attribute not in ("createVolumePermission", "productCodes"):
        raise invalid_value("Attribute", attribute,
                            "Valid values: createVolumePermission, productCodes.")
    with ctx.db.read() as session:
        snapshot = sharing.owned_snapshot(session, snapshot_id, ctx.account_id)
        if attribute == "productCodes":
            return {"SnapshotId": snapshot.id, "ProductCodes": []}
        return {"SnapshotId": snapshot.id, "CreateVolumePermissions":
                sharing.render_permissions(snapshot.volume_permissions)}


def modify_snapshot_attribute(ctx: Context, params: dict) -> dict:
    snapshot_id, attribute = _snapshot_id(params), params.get("Attribute")
    if attribute not in (None, "createVolumePermission"):
        raise invalid_value("Attribute", attribute, "Only createVolumePermission can be "
                            "modified.")
    legacy = ([{"UserId": u} for u in params.get("UserIds") or []]
              + [{"Group": g} for g in params.get("GroupNames") or []])
    add, remove = _permission_changes(params.get("CreateVolumePermission"), legacy,
                                      params.get("OperationType"))
    if not add and not remove:
        raise ApiError("MissingParameter", "ModifySnapshotAttribute needs "
                       "CreateVolumePermission.Add or .Remove (or OperationType with UserId.N)")
    with ctx.db.write() as session:
        snapshot = sharing.owned_snapshot(session, snapshot_id, ctx.account_id)
        sharing.change_permissions(
            snapshot.volume_permissions,
            lambda user, group: CreateVolumePermission(user_id=user, group_name=group),
            add, remove, "CreateVolumePermission", snapshot.encrypted)
    return {}


def reset_snapshot_attribute(ctx: Context, params: dict) -> dict:
    return _reset(ctx, params.get("Attribute"), "createVolumePermission", "volume_permissions",
                  lambda session: sharing.owned_snapshot(session, _snapshot_id(params),
                                                         ctx.account_id))


def enable_image_deregistration_protection(ctx: Context, params: dict) -> dict:
    image_id = _image_id(params)
    state = "enabled-with-cooldown" if params.get("WithCooldown") else "enabled-without-cooldown"
    with ctx.db.write() as session:
        image = sharing.owned_image(session, image_id, ctx.account_id)
        image.deregistration_protection, image.protected_until = state, None
    return {"Return": state}


def disable_image_deregistration_protection(ctx: Context, params: dict) -> dict:
    image_id = _image_id(params)
    with ctx.db.write() as session:
        image = sharing.owned_image(session, image_id, ctx.account_id)
        if image.deregistration_protection == "enabled-with-cooldown":
            # The cooldown: the image stays protected for a while after the switch is off.
            image.protected_until = datetime.now(timezone.utc) + PROTECTION_COOLDOWN
        image.deregistration_protection = None
        state = protection_state(image)
    return {"Return": state}


def enable_image_deprecation(ctx: Context, params: dict) -> dict:
    image_id = _image_id(params)
    when = params.get("DeprecateAt")
    if when is None:
        raise missing("DeprecateAt")
    when = when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when
    # EC2 rounds to the minute, and takes dates up to 10 years ahead, none in the past.
    when = (when + timedelta(seconds=30)).replace(second=0, microsecond=0)
    now = datetime.now(timezone.utc)
    if not now < when <= now + DEPRECATION_HORIZON:
        raise invalid_value("DeprecateAt", when.strftime("%Y-%m-%dT%H:%M:%SZ"),
                            "It must be in the future and at most 10 years ahead.")
    with ctx.db.write() as session:
        image = sharing.owned_image(session, image_id, ctx.account_id)
        image.deprecation_time = when
    return {"Return": True}


def disable_image_deprecation(ctx: Context, params: dict) -> dict:
    image_id = _image_id(params)
    with ctx.db.write() as session:
        image = sharing.owned_image(session, image_id, ctx.account_id)
        image.deprecation_time = None
    return {"Return": True}
