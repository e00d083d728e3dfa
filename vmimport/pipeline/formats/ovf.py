"""The OVF descriptor of an OVA: which files are disks, in which order, of what size and format.

The descriptor is XML written by the user, so it is parsed by defusedxml with DTDs, entities
and external references forbidden (XXE, billion laughs), and bounded in size. Only what the
import needs is read, by local name (OVF 1.x and 2.0 differ in namespace, not in shape):

  Envelope/References/File          ovf:id, ovf:href (a member of the OVA), ovf:size
  Envelope/DiskSection/Disk         ovf:diskId, ovf:fileRef, ovf:capacity (+ units), ovf:format
  VirtualSystem/VirtualHardwareSection/Item
                                    rasd:HostResource = ovf:/disk/<diskId>: the attach order

The `.mf` manifest (`parse_manifest`) belongs to the same OVF package and is parsed here too.

The disks come back in the order of the hardware items that attach them (the first is the boot
volume), then any disk no item attaches, in DiskSection order. An href is a plain member name:
one with `/`, `\\`, `..` or a scheme (`http:`) is refused, because an importer never opens a
path that comes from the image.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from xml.etree.ElementTree import ParseError

import defusedxml
import defusedxml.ElementTree as safe_xml

from ..errors import ImportFailure
from .base import human_size

# AWS's wording for an OVA it will not take.
OVA_UNSUPPORTED = "Disk validation failed [Unsupported OVA format]"
MAX_OVF_BYTES = 1 << 20
MAX_DISKS = 21  # AWS: at most 21 volumes per image

_DISK_RESOURCE = re.compile(r"^(?:ovf:)?/disk/(.+)$")
_UNITS = re.compile(r"^byte(?:\s*\*\s*(\d+)\s*\^\s*(\d+))?$", re.IGNORECASE)
_DIGESTS = {"SHA1": 40, "SHA256": 64, "SHA512": 128}
_MANIFEST_LINE = re.compile(r"^(SHA1|SHA256|SHA512)\s*\((.+)\)\s*=\s*([0-9A-Fa-f]+)$")
_OLD_UNITS = {"kilobytes": 1 << 10, "megabytes": 1 << 20, "gigabytes": 1 << 30}


@dataclass(frozen=True)
class OvfDisk:
    disk_id: str
    href: str  # the OVA member holding the disk
    file_size: int | None  # ovf:size of the File, when given
    capacity: int | None  # bytes, when the descriptor states a number
    format_uri: str | None

    @property
    def declared_format(self) -> str | None:
        """The `open_guest_disk` format the ovf:format URI names (detection still decides)."""
        uri = (self.format_uri or "").lower()
        if "vmdk" in uri:
            return "vmdk"
        if "bb676673" in uri:  # Microsoft's VHD specification page, as Citrix/Xen write it
            return "vhd"
        if "qcow" in uri:
            return "qcow2"
        return None


@dataclass(frozen=True)
class Envelope:
    disks: list[OvfDisk]  # boot volume first
    files: dict[str, int | None]  # every referenced href -> its ovf:size


def _local(name: str) -> str:
    return name.rsplit("}", 1)[-1]


def _attr(element, name: str) -> str | None:
    """An attribute by local name, whatever its namespace prefix (ovf:href, href)."""
    for key, value in element.attrib.items():
        if _local(key) == name:
            return value
    return None


def _children(element, name: str) -> list:
    return [child for child in element if _local(child.tag) == name]


def _refuse(where: str, what: str) -> ImportFailure:
    return ImportFailure(f"{OVA_UNSUPPORTED} the OVF descriptor {where} {what}")


def check_href(href: str | None, where: str) -> str:
    """A File href must name a member of the OVA itself: a plain file name."""
    if not href:
        raise _refuse(where, "has a File without an ovf:href")
    shown = repr(href[:200])
    if (
        "/" in href or "\\" in href or href in (".", "..") or ":" in href
        or any(ord(c) < 32 for c in href)
    ):
        raise _refuse(where, f"references the file {shown}, which is not a plain file name "
                             "inside the OVA (paths, '..' and URLs are refused: this server "
                             "never opens a path from the image)")
    return href


def _integer(value: str | None, where: str, what: str) -> int | None:
    if value is None:
        return None
    value = value.strip()
    if not value.isascii() or not value.isdigit() or len(value) > 30:
        raise _refuse(where, f"has {what}={value[:40]!r}, which is not a whole number")
    return int(value)


def _capacity(disk, where: str, max_size: int) -> int | None:
    value = (_attr(disk, "capacity") or "").strip()
    if value.startswith("${") or not value:
        return None  # an OVF property: the disk's own header is authoritative
    count = _integer(value, where, "ovf:capacity")
    units = (_attr(disk, "capacityAllocationUnits") or "byte").strip()
    if units.lower() in _OLD_UNITS:
        scale = _OLD_UNITS[units.lower()]
    elif m := _UNITS.match(units):
        base, power = int(m.group(1) or 1), int(m.group(2) or 0)
        if base not in (1, 2, 10) or power > 64:
            raise _refuse(where, f"has capacityAllocationUnits={units[:40]!r}; expected "
                                 "'byte * 2^n' or 'byte * 10^n'")
        scale = base**power
    else:
        raise _refuse(where, f"has capacityAllocationUnits={units[:40]!r}; expected "
                             "'byte * 2^n' or 'byte * 10^n'")
    size = count * scale
    if size > max_size:
        raise ImportFailure(
            f"The disk image is too large: the OVF descriptor {where} declares a capacity of "
            f"{size} bytes ({human_size(size)}); this server accepts at most "
            f"{human_size(max_size)}")
    return size


def parse_ovf(data: bytes, name: str, max_virtual_size: int) -> Envelope:
    """Parse the descriptor bytes of OVA member `name`; every refusal says what and where."""
    top = f"{name!r}"
    if len(data) > MAX_OVF_BYTES:
        raise _refuse(top, f"is {len(data)} bytes; at most {MAX_OVF_BYTES} are accepted")
    try:
        root = safe_xml.fromstring(data, forbid_dtd=True, forbid_entities=True,
                                   forbid_external=True)
    except defusedxml.DefusedXmlException as exc:
        raise _refuse(top, f"contains a DTD, an entity declaration or an external reference "
                           f"({type(exc).__name__}: {str(exc)[:120]}); they are refused "
                           "(XML external entities and entity expansion bombs)") from None
    except (ParseError, ValueError) as exc:
        raise _refuse(top, f"is not well-formed XML ({str(exc)[:160]})") from None
    except LookupError as exc:  # <?xml encoding="..."?> naming no codec Python knows
        raise _refuse(top, f"declares an encoding Python does not know ({str(exc)[:120]}); "
                           "OVF descriptors are UTF-8") from None
    if _local(root.tag) != "Envelope":
        raise _refuse(top, f"has root element <{_local(root.tag)[:60]}>, not <Envelope>")

    files: dict[str, tuple[str, int | None]] = {}  # id -> (href, size)
    hrefs: dict[str, int | None] = {}
    for references in _children(root, "References"):
        for n, item in enumerate(_children(references, "File"), start=1):
            where = f"{top} (References/File #{n})"
            href = check_href(_attr(item, "href"), where)
            file_id = _attr(item, "id") or ""
            if _attr(item, "chunkSize") is not None:
                raise _refuse(where, f"splits {href!r} into chunks (ovf:chunkSize); chunked "
                                     "files are not supported")
            if (_attr(item, "compression") or "identity") != "identity":
                raise _refuse(where, f"compresses {href!r} (ovf:compression="
                                     f"{_attr(item, 'compression')[:20]!r}); not supported")
            if file_id in files or href in hrefs:
                raise _refuse(where, f"declares the file id {file_id[:60]!r} / href {href!r} "
                                     "twice")
            size = _integer(_attr(item, "size"), where, "ovf:size")
            files[file_id] = (href, size)
            hrefs[href] = size

    sections = _children(root, "DiskSection")
    if len(sections) > 1:
        raise _refuse(top, f"has {len(sections)} DiskSections; expected one")
    disks: dict[str, OvfDisk] = {}
    used_files: set[str] = set()
    for n, disk in enumerate(_children(sections[0], "Disk") if sections else [], start=1):
        disk_id = _attr(disk, "diskId") or ""
        where = f"{top} (DiskSection/Disk #{n}, diskId {disk_id[:60]!r})"
        if disk_id in disks:
            raise _refuse(where, "declares that diskId twice")
        if _attr(disk, "parentRef") is not None:
            raise _refuse(where, "names a parent disk (ovf:parentRef): a delta disk cannot be "
                                 "imported on its own")
        file_ref = _attr(disk, "fileRef")
        if file_ref is None:
            raise _refuse(where, "has no ovf:fileRef (an empty disk to be created); only "
                                 "disks with content can be imported")
        if file_ref not in files:
            raise _refuse(where, f"has ovf:fileRef={file_ref[:60]!r}, which no "
                                 "References/File declares")
        if file_ref in used_files:
            raise _refuse(where, f"uses the file {files[file_ref][0]!r} that another disk "
                                 "already uses")
        used_files.add(file_ref)
        href, size = files[file_ref]
        disks[disk_id] = OvfDisk(disk_id, href, size, _capacity(disk, where, max_virtual_size),
                                 _attr(disk, "format"))
    if not disks:
        raise _refuse(top, "declares no disks (DiskSection/Disk with an ovf:fileRef)")
    if len(disks) > MAX_DISKS:
        raise _refuse(top, f"declares {len(disks)} disks; an image has at most {MAX_DISKS} "
                           "volumes")
    return Envelope(_attach_order(root, disks, top), hrefs)


def _attach_order(root, disks: dict[str, OvfDisk], top: str) -> list[OvfDisk]:
    systems = [el for el in root.iter() if _local(el.tag) == "VirtualSystem"]
    if len(systems) != 1:
        raise _refuse(top, f"describes {len(systems)} virtual systems; an OVA imports as one "
                           "image, so it must describe exactly one VirtualSystem")
    hardware = _children(systems[0], "VirtualHardwareSection")
    ordered: list[OvfDisk] = []
    seen: set[str] = set()
    for n, item in enumerate(
        [el for el in hardware[0] if _local(el.tag) in ("Item", "StorageItem")]
        if hardware else [], start=1,
    ):
        for resource in (el for el in item if _local(el.tag) == "HostResource"):
            m = _DISK_RESOURCE.match((resource.text or "").strip())
            if not m:
                continue  # ovf:/file/<id>: an ISO or NVRAM file, not a volume
            disk_id = m.group(1)
            where = f"{top} (VirtualHardwareSection item #{n})"
            if disk_id not in disks:
                raise _refuse(where, f"attaches the disk {disk_id[:60]!r}, which DiskSection "
                                     "does not declare")
            if disk_id in seen:
                raise _refuse(where, f"attaches the disk {disk_id[:60]!r} a second time")
            seen.add(disk_id)
            ordered.append(disks[disk_id])
    ordered += [disk for disk_id, disk in disks.items() if disk_id not in seen]
    return ordered


def parse_manifest(data: bytes, member, present: set[str]) -> dict[str, dict[str, str]]:
    """The `.mf` manifest of an OVA (`member`: its tar entry): `SHA256(file)= hex` lines (SHA1,
    SHA256, SHA512) -> {file: {alg: hex}}. Every line must be one of those and name a file in
    `present`; anything else is refused rather than skipped."""
    where = f"{OVA_UNSUPPORTED} the OVA manifest {member.name!r} (at offset {member.offset})"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ImportFailure(f"{where} is not UTF-8 text") from None
    out: dict[str, dict[str, str]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        m = _MANIFEST_LINE.match(line)
        if not m or len(m.group(3)) != _DIGESTS[m.group(1)]:
            raise ImportFailure(f"{where}, line {number}: {line[:100]!r} is not an 'SHA1(file)= "
                                "hex', 'SHA256(file)= hex' or 'SHA512(file)= hex' line")
        alg, name, digest = m.groups()
        if name not in present:
            raise ImportFailure(f"{where}, line {number}: lists {name[:200]!r}, which is not a "
                                "file of this OVA")
        if alg in out.setdefault(name, {}):
            raise ImportFailure(f"{where}, line {number}: lists {name[:200]!r} twice")
        out[name][alg] = digest
    return out
