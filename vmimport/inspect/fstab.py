"""Resolve the root's /etc/fstab entries for / and /boot to the filesystems found on the disk.

Names understood: ``UUID=``/``LABEL=`` (and /dev/disk/by-uuid|by-label/), ``/dev/mapper/<vg>-<lv>``
(a '-' inside a name is doubled), ``/dev/<vg>/<lv>``, and ``/dev/sdaN``-style partition names.
``PARTUUID=`` is not checked. What an entry resolves to, or that it resolves to nothing on this
disk, becomes a finding; a separate /boot named by the fstab is where the kernel is taken from.
"""

from __future__ import annotations

import re

from vmimport.inspect.model import PartitionInfo

PARTITION_NAME = re.compile(r"^/dev/(?:[sv]d[a-z]|xvd[a-z]|hd[a-z]|nvme\d+n\d+p)(\d+)$")


def _mapper_name(name: str) -> str | None:
    """'rl-root' -> 'rl/root'; 'my--vg-lv' -> 'my-vg/lv' (device-mapper doubles dashes in names)."""
    m = re.fullmatch(r"((?:[^-]|--)+)-((?:[^-]|--)+)", name)
    return f"{m.group(1).replace('--', '-')}/{m.group(2).replace('--', '-')}" if m else None


def resolve(spec: str, volumes: list[PartitionInfo]) -> PartitionInfo | None | str:
    """The volume ``spec`` names, None if it names none of ``volumes``, or "unchecked"."""
    key, _, value = spec.partition("=")
    if spec.startswith("/dev/disk/by-uuid/"):
        key, value = "UUID", spec.rsplit("/", 1)[1]
    elif spec.startswith("/dev/disk/by-label/"):
        key, value = "LABEL", spec.rsplit("/", 1)[1]
    if key == "UUID" and value:
        return next((v for v in volumes if v.fs_uuid and v.fs_uuid.lower() == value.lower()), None)
    if key == "LABEL" and value:
        return next((v for v in volumes if v.fs_label == value), None)
    if spec.startswith("/dev/mapper/"):
        path = _mapper_name(spec[len("/dev/mapper/"):])
        return next((v for v in volumes if path and v.volume == path), None)
    m = PARTITION_NAME.match(spec)
    if m:
        return next((v for v in volumes if not v.volume and v.number == int(m.group(1))), None)
    parts = spec.split("/")
    if len(parts) == 4 and parts[:2] == ["", "dev"]:
        return next((v for v in volumes if v.volume == f"{parts[2]}/{parts[3]}"), None)
    return "unchecked"


def check_fstab(entries: list[tuple[str, str, str, str]], root: PartitionInfo, volumes: list[PartitionInfo],
                notes: list[str]) -> PartitionInfo | None:
    """Findings for the / and /boot entries; the /boot volume when the fstab names one found here."""
    boot = None
    for spec, mountpoint, _, _ in entries:
        if mountpoint not in ("/", "/boot"):
            continue
        found = resolve(spec, volumes)
        if found == "unchecked":
            notes.append(f"/etc/fstab mounts {mountpoint} from {spec}, a name vmimport does not check")
        elif found is None:
            notes.append(f"/etc/fstab mounts {mountpoint} from {spec}, which names no filesystem on this disk")
        elif mountpoint == "/" and (found.number, found.volume) != (root.number, root.volume):
            notes.append(f"/etc/fstab mounts / from {spec}, which is {found.describe()}, not the root found on {root.describe()}")
        else:
            notes.append(f"/etc/fstab mounts {mountpoint} from {spec}: {found.describe()}")
            if mountpoint == "/boot":
                boot = found
    return boot
