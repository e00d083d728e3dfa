"""The `format` stage: decide what the user's bytes really are and expose the guest disk.

The format is decided from magic bytes (`probe_format`), never from the object's name or the
declared `DiskContainer.Format`; a declared format that the bytes contradict is refused, because
guessing is how converters were tricked into reading host files (see reference/disk-formats.md).
`open_guest_disk` then returns a `GuestDisk` whose `extents()` streams the disk's allocated data
in one sequential pass over the source.
"""

from __future__ import annotations

from ..errors import ImportFailure
from .base import UNSUPPORTED, GuestDisk, Limits, Source
from .ova import open_ova, open_single_disk_ova
from .probe import Detection, detect, probe_format
from .qcow2 import Qcow2
from .raw import RawDisk
from .vhd import Vhd
from .vhdx import Vhdx
from .vmdk_sparse import SparseVmdk
from .vmdk_stream import StreamOptimizedVmdk

__all__ = [
    "Detection",
    "GuestDisk",
    "Limits",
    "Source",
    "detect",
    "open_guest_disk",
    "open_guest_disks",
    "probe_format",
]

# Declared Format -> the detected formats that honour it.
_DECLARED = {
    "raw": {"raw"},
    "vmdk": {"vmdk-streamOptimized", "vmdk-monolithicSparse", "vmdk-descriptor"},
    "vhd": {"vhd"},
    "vhdx": {"vhdx"},
    "ova": {"ova"},
    "qcow2": {"qcow2"},
}
_READERS = {
    "raw": RawDisk,
    "vmdk-streamOptimized": StreamOptimizedVmdk,
    "vhd": Vhd,
    "vhdx": Vhdx,
    "qcow2": Qcow2,
    "vmdk-monolithicSparse": SparseVmdk,
}
_ARCHIVES = {"gzip", "xz", "bzip2", "zstd", "zip"}
_NOT_DISKS = {"iso9660", "vdi", "qed", "luks", "vmdk-descriptor"}
_NAMES = {
    "vmdk-monolithicSparse": "monolithicSparse VMDK",
    "vmdk-streamOptimized": "streamOptimized VMDK",
    "vhd": "VHD",
    "vhdx": "VHDX",
    "qcow2": "qcow2",
    "ova": "OVA",
}


def open_guest_disk(source, declared_format: str | None, limits: Limits | None = None) -> GuestDisk:
    """Check `source` against the declared format and open a reader for what it really is.

    Raises `ImportFailure` (ClientError) for an empty image, a declared/actual mismatch, a
    format this server does not read, or a malformed header/descriptor.
    """
    limits = limits or Limits()
    if source.size == 0:
        raise ImportFailure(f"{UNSUPPORTED} the image {source.description} is empty (0 bytes)")
    declared = declared_format.lower() if declared_format else None
    if declared is not None and declared not in _DECLARED:
        raise ImportFailure(
            f"{UNSUPPORTED} the declared format {declared_format!r} is not one of "
            "OVA, VHD, VHDX, VMDK, RAW, QCOW2"
        )
    found = detect(source)
    if declared is not None and found.format not in _DECLARED[declared]:
        raise ImportFailure(
            f"{UNSUPPORTED} The image was declared {declared.upper()} but its bytes are "
            f"{found.what} ({found.evidence})"
        )
    reader = _READERS.get(found.format)
    if reader is not None:
        return reader(source, limits)
    if found.format in _ARCHIVES:
        raise ImportFailure(
            f"{UNSUPPORTED} the image {source.description} is {found.what} ({found.evidence}); "
            "compressed uploads are not accepted, upload the disk image itself"
        )
    if found.format in _NOT_DISKS:
        raise ImportFailure(
            f"{UNSUPPORTED} the image {source.description} is {found.what} ({found.evidence}), "
            "which is not a supported disk image format (OVA, VMDK, VHD, VHDX, RAW, QCOW2)"
        )
    name = _NAMES.get(found.format, found.format)
    raise ImportFailure(
        f"{UNSUPPORTED} {name} images are not supported yet by this server (detected "
        f"{found.what} from {found.evidence})"
    )


# -- OVA: a container of disks (ova.py), registered apart from the single-file readers ---------

def _open_ova(source, limits: Limits) -> GuestDisk:
    return open_single_disk_ova(source, limits, open_guest_disk)


_READERS["ova"] = _open_ova


def open_guest_disks(source, declared_format: str | None,
                     limits: Limits | None = None) -> list[GuestDisk]:
    """Every guest disk in `source`: for an OVA, one per disk its descriptor references, in
    the descriptor's order (the first is the boot volume); otherwise `[open_guest_disk(...)]`.
    """
    limits = limits or Limits()
    declared = declared_format.lower() if declared_format else None
    if declared in (None, "ova") and source.size and detect(source).format == "ova":
        return open_ova(source, limits, open_guest_disk)
    return [open_guest_disk(source, declared_format, limits)]
