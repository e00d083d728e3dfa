"""The synchronous checks of ImportImage and ImportSnapshot: everything AWS refuses at once,
refused here at once with EC2's code and a message that says which value and why.

(What AWS only finds out later — the object is missing, the bytes are not a disk, the KMS key is
disabled — ends the task asynchronously with ``ClientError: ...`` instead; see ``pipeline``.)
"""

from __future__ import annotations

import re

from vmimport.messages import shorten

from . import s3_names
from .errors import ApiError, invalid_value, missing
from .tag_store import validate_tags

MAX_VOLUMES = 21
IMAGE_FORMATS = {"OVA", "VHD", "VHDX", "VMDK", "RAW", "QCOW2"}
SNAPSHOT_FORMATS = {"VHD", "VHDX", "VMDK", "RAW", "QCOW2"}
ARCHITECTURES = {"i386", "x86_64"}
PLATFORMS = {"Windows", "Linux"}
BOOT_MODES = {"legacy-bios", "uefi"}
LICENSE_TYPES = {"AWS", "BYOL", "Auto"}
# Billing codes AWS documents for imported images (ec2-import-api reference §1.5).
USAGE_OPERATIONS = {
    "RunInstances": "Linux", "RunInstances:0004": "Linux", "RunInstances:0100": "Linux",
    "RunInstances:0200": "Linux", "RunInstances:0002": "Windows",
    "RunInstances:0800": "Windows", "RunInstances:0006": "Windows",
    "RunInstances:0102": "Windows", "RunInstances:0202": "Windows",
}
_KMS_KEY = re.compile(
    r"^(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32}"
    r"|alias/[A-Za-z0-9/_-]{1,250}"
    r"|arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:(?:key/[0-9a-f-]{36}|key/mrk-[0-9a-f]{32}"
    r"|alias/[A-Za-z0-9/_-]{1,250}))$")
_LICENSE_ARN = re.compile(
    r"^arn:aws[a-z-]*:license-manager:[a-z0-9-]+:\d{12}:license-configuration:lic-[0-9a-f]{32}$")
_DEVICE_NAME = re.compile(r"^/dev/(sd[a-z][1-9]?|xvd[a-z]{1,2}[1-9]?)$")
_SNAPSHOT_ID = re.compile(r"^snap-[0-9a-f]{8,17}$")


def _choice(params: dict, name: str, allowed: set[str]) -> None:
    value = params.get(name)
    if value is not None and value not in allowed:
        raise invalid_value(name, value, f"Valid values: {', '.join(sorted(allowed))}.")


def check_client_token(token: str | None) -> None:
    if token is not None and (len(token) > 64 or not token.isascii()):
        raise invalid_value("ClientToken", token[:70],
                            "A client token is at most 64 ASCII characters.")


def check_encryption(params: dict) -> None:
    key = params.get("KmsKeyId")
    if key is not None:
        if not params.get("Encrypted"):
            raise ApiError("InvalidParameterCombination",
                           "KmsKeyId requires Encrypted=true: a KMS key can only be used "
                           "for an encrypted import")
        if not _KMS_KEY.match(key):
            raise invalid_value("KmsKeyId", key, "Use a key id, key ARN, alias name "
                                "(alias/...) or alias ARN.")


def check_role_name(role: str | None) -> None:
    """The syntax only; whether the role exists and trusts VM Import is ``iam.check_service_role``."""
    if role is not None and not re.match(r"^[\w+=,.@-]{1,64}$", role):
        raise invalid_value("RoleName", role, "A role name is 1-64 of [A-Za-z0-9+=,.@_-].")


def check_tag_specifications(params: dict, resource_type: str) -> list[dict]:
    tags = []
    for n, spec in enumerate(params.get("TagSpecifications") or [], 1):
        rtype = spec.get("ResourceType")
        if rtype != resource_type:
            raise invalid_value(f"TagSpecification.{n}.ResourceType", rtype,
                                f"This call can only tag '{resource_type}'.")
        tags += validate_tags(spec.get("Tags"), f"TagSpecification.{n}.Tag")
    if len({t["Key"] for t in tags}) > 50:
        raise ApiError("TagLimitExceeded", "At most 50 tags can be set on a resource")
    return tags


def check_disk_container(disk: dict, where: str, formats: set[str]) -> dict:
    """Validate one disk container and return it normalised (Format upper-cased)."""
    sources = [name for name in ("Url", "UserBucket", "SnapshotId") if disk.get(name)]
    if not sources:
        raise ApiError("MissingParameter",
                       f"{where} needs a source: exactly one of Url, UserBucket or SnapshotId")
    if len(sources) > 1:
        raise ApiError("InvalidParameterCombination",
                       f"{where} has {' and '.join(sources)}: give exactly one source")
    out = dict(disk)
    if disk.get("UserBucket"):
        for part in ("S3Bucket", "S3Key"):
            if not disk["UserBucket"].get(part):
                raise missing(f"{where}.UserBucket.{part}")
        _check_s3_names(f"{where}.UserBucket", disk["UserBucket"]["S3Bucket"],
                        disk["UserBucket"]["S3Key"])
    if disk.get("Url"):
        url = disk["Url"]
        if not re.match(r"^(s3|https?)://", url):
            raise invalid_value(f"{where}.Url", "<url>",
                                "The URL must be s3://bucket/key or an https:// URL.")
        if url[:5].lower() == "s3://":
            bucket, _, key = url[5:].partition("/")
            _check_s3_names(f"{where}.Url", bucket, key)
    if disk.get("SnapshotId") and not _SNAPSHOT_ID.match(disk["SnapshotId"]):
        raise ApiError("InvalidSnapshotID.Malformed",
                       f"Invalid id: \"{shorten(disk['SnapshotId'])}\" (expecting \"snap-...\")")
    fmt = disk.get("Format")
    if fmt is not None:
        if fmt.upper() not in formats:
            raise invalid_value(f"{where}.Format", fmt,
                                f"Valid values: {', '.join(sorted(formats))} (any case).")
        out["Format"] = fmt.upper()
    device = disk.get("DeviceName")
    if device is not None and not _DEVICE_NAME.match(device):
        raise invalid_value(f"{where}.DeviceName", device,
                            "Use a name like /dev/sda1, /dev/sdb or /dev/xvdb.")
    return out


def _check_s3_names(where: str, bucket: str, key: str) -> None:
    problem = s3_names.bucket_problem(bucket)
    if problem:
        raise invalid_value(f"{where}.S3Bucket" if where.endswith("UserBucket") else where,
                            bucket, problem)
    problem = s3_names.key_problem(key)
    if problem:
        raise invalid_value(f"{where}.S3Key" if where.endswith("UserBucket") else where,
                            key, problem)


def check_import_image(params: dict) -> list[dict]:
    """All synchronous ImportImage checks; returns the normalised disk containers."""
    check_client_token(params.get("ClientToken"))
    disks = params.get("DiskContainers") or []
    if not disks:
        raise missing("DiskContainer")
    if len(disks) > MAX_VOLUMES:
        raise ApiError("InvalidParameter",
                       f"{len(disks)} disk containers given; an imported image can have at "
                       f"most {MAX_VOLUMES} volumes (import more disks with ImportSnapshot)")
    disks = [check_disk_container(d, f"DiskContainer.{n}", IMAGE_FORMATS)
             for n, d in enumerate(disks, 1)]
    devices = [d["DeviceName"] for d in disks if d.get("DeviceName")]
    if len(devices) != len(set(devices)):
        raise ApiError("InvalidParameterCombination",
                       f"Two disk containers use the same DeviceName: {devices}")

    arch = params.get("Architecture")
    if arch == "arm64":
        raise ApiError("InvalidParameter", "Parameter architecture=arm64 has an invalid format"
                       " (ImportImage accepts i386 and x86_64; import arm64 disks with "
                       "ImportSnapshot and RegisterImage)")
    _choice(params, "Architecture", ARCHITECTURES)
    _choice(params, "Platform", PLATFORMS)
    if params.get("BootMode") == "uefi-preferred":
        raise invalid_value("BootMode", "uefi-preferred",
                            "ImportImage accepts legacy-bios or uefi; uefi-preferred is only "
                            "for RegisterImage.")
    _choice(params, "BootMode", BOOT_MODES)
    _choice(params, "Hypervisor", {"xen"})
    _choice(params, "LicenseType", LICENSE_TYPES)
    usage = params.get("UsageOperation")
    if usage is not None:
        if params.get("LicenseType") is not None:
            raise ApiError("InvalidParameterCombination",
                           "LicenseType and UsageOperation cannot be given together: "
                           "UsageOperation already implies the license")
        if usage not in USAGE_OPERATIONS:
            raise invalid_value("UsageOperation", usage,
                                f"Valid values: {', '.join(sorted(USAGE_OPERATIONS))}.")
        platform = params.get("Platform")
        if platform and USAGE_OPERATIONS[usage] != platform:
            raise ApiError("InvalidParameterCombination",
                           f"UsageOperation {usage} is for {USAGE_OPERATIONS[usage]} images, "
                           f"but Platform is {platform}")
    if params.get("LicenseType") == "AWS" and params.get("Platform") == "Linux":
        raise ApiError("InvalidParameterCombination",
                       "LicenseType AWS is only for Windows; Linux imports are BYOL")
    check_encryption(params)
    for n, spec in enumerate(params.get("LicenseSpecifications") or [], 1):
        arn = spec.get("LicenseConfigurationArn")
        if not arn:
            raise missing(f"LicenseSpecifications.{n}.LicenseConfigurationArn")
        if not _LICENSE_ARN.match(arn):
            raise invalid_value(f"LicenseSpecifications.{n}.LicenseConfigurationArn", arn,
                                "Expected arn:aws:license-manager:<region>:<account>:"
                                "license-configuration:lic-<32 hex>.")
    if params.get("LicenseSpecifications") and params.get("BootMode") == "uefi":
        raise ApiError("InvalidParameterCombination",
                       "UEFI imports cannot specify license configurations")
    check_role_name(params.get("RoleName"))
    description = params.get("Description")
    if description is not None and len(description) > 255:
        raise invalid_value("Description", description[:40] + "...",
                            "A description is at most 255 characters.")
    return disks
