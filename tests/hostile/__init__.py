"""Builders shared by the hostile corpus (`cases_*.py`, see README.md) and the format tests:
qemu-img-made base images (memoised per process), byte patching, and OVAs written with tarfile.
"""

from __future__ import annotations

import hashlib
import io
import random
import shutil
import struct
import subprocess
import tarfile
from pathlib import Path

QEMU_IMG = shutil.which("qemu-img")
MiB = 1 << 20
VMDK_STREAM_URI = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"
VMDK_SPARSE_URI = "http://www.vmware.com/interfaces/specifications/vmdk.html#monolithicSparse"

_CACHE: dict[tuple, bytes] = {}


def guest_raw(size: int = 2 * MiB, seed: int = 1) -> bytes:
    """A small guest disk: random, text-like and zero regions (grains compress differently and
    some stay unallocated)."""
    rng = random.Random(seed)
    buf = bytearray(size)
    at = 4096
    while at < size:
        n = min(rng.randint(4096, 200_000), size - at)
        if rng.random() < 0.5:
            buf[at : at + n] = rng.randbytes(n)
        else:
            buf[at : at + n] = (b"vmimport hostile corpus %d " % at * (n // 20 + 1))[:n]
        at += n + rng.choice((0, 65536, 150_000))
    return bytes(buf)


def spaced_raw(seed: int, size: int = 5 * MiB + 3 * 512, fill: float = 0.8,
               shortest: int = 70_000) -> bytes:
    """A guest disk with a piece (random or text, ``shortest`` to 200,000 bytes) starting at
    ``fill`` of its 256 KiB boundaries: the base of the qcow2, VMDK and VHDX cases."""
    rng = random.Random(seed)
    buf = bytearray(size)
    for at in range(0, size, 256 * 1024):
        if rng.random() < fill:
            n = min(rng.randint(shortest, 200_000), size - at)
            buf[at : at + n] = rng.randbytes(n) if rng.random() < 0.5 else b"text " * (n // 5)
    return bytes(buf)


def qemu_image(tmpdir: Path, fmt: str, *options: str, size: int = 2 * MiB, seed: int = 1,
               raw: bytes | None = None) -> bytes:
    """`qemu-img convert -f raw -O fmt options` of `guest_raw(size, seed)` (or `raw`), memoised
    in this process; the files are written under `tmpdir`."""
    key = (fmt, options, size, seed, None if raw is None else hashlib.sha256(raw).digest())
    if key not in _CACHE:
        tmpdir = Path(tmpdir)
        tmpdir.mkdir(parents=True, exist_ok=True)
        name = f"base-{abs(hash(key)) % 10**12}"
        src, dst = tmpdir / f"{name}.raw", tmpdir / f"{name}.{fmt}"
        src.write_bytes(guest_raw(size, seed) if raw is None else raw)
        subprocess.run([QEMU_IMG or "qemu-img", "convert", "-f", "raw", "-O", fmt, *options,
                        str(src), str(dst)], check=True, capture_output=True)
        _CACHE[key] = dst.read_bytes()
    return _CACHE[key]


def stream_vmdk(tmpdir: Path, size: int = 2 * MiB, seed: int = 1) -> bytes:
    return qemu_image(tmpdir, "vmdk", "-o", "subformat=streamOptimized", size=size, seed=seed)


def patch(data: bytes, offset: int, fmt: str, *values) -> bytes:
    """`data` with struct `fmt` packed at `offset` (fmt uses struct syntax, e.g. "<Q")."""
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, *values)
    return bytes(out)


def vmdk_markers(vmdk: bytes) -> list[tuple[int, int, int, int]]:
    """(file offset, lba, compressed size or 0, metadata type or -1) of every stream marker."""
    overhead = struct.unpack_from("<Q", vmdk, 64)[0]
    at, out = overhead * 512, []
    while at + 16 <= len(vmdk):
        lba, size = struct.unpack_from("<QI", vmdk, at)
        if size:
            out.append((at, lba, size, -1))
            at += -(-(12 + size) // 512) * 512
        else:
            kind = struct.unpack_from("<I", vmdk, at + 12)[0]
            out.append((at, lba, 0, kind))
            if kind == 0:
                break
            at += 512 + lba * 512
    return out


def set_vmdk_descriptor(vmdk: bytes, edit) -> bytes:
    """`vmdk` with its embedded descriptor text replaced by `edit(text)` (same space)."""
    off, size = (n * 512 for n in struct.unpack_from("<QQ", vmdk, 28))
    text = vmdk[off : off + size].split(b"\0", 1)[0].decode()
    new = edit(text).encode()
    assert len(new) <= size, "edited descriptor does not fit"
    return vmdk[:off] + new.ljust(size, b"\0") + vmdk[off + size :]


# -- OVA -----------------------------------------------------------------------------------------

def ovf_xml(disks: list[dict], attach: list[str] | None = None, *, doctype: str = "",
            extra_files: list[dict] = (), extra_items: str = "", version: int = 1) -> bytes:
    """An OVF envelope. Each disk: {"id", "href", "capacity", "format"?, "size"?, "file_id"?,
    "units"?}; `attach` = disk ids in hardware-item order (default: the disks' order)."""
    ns = f"http://schemas.dmtf.org/ovf/envelope/{version}"
    files, disk_lines = [], []
    for n, disk in enumerate(disks, start=1):
        file_id = disk.get("file_id", f"file{n}")
        size = f' ovf:size="{disk["size"]}"' if disk.get("size") is not None else ""
        files.append(f'<File ovf:href="{disk["href"]}" ovf:id="{file_id}"{size}/>')
        units = (f' ovf:capacityAllocationUnits="{disk["units"]}"' if disk.get("units") else "")
        fmt = disk.get("format", VMDK_STREAM_URI)
        disk_lines.append(f'<Disk ovf:capacity="{disk["capacity"]}"{units} ovf:diskId='
                          f'"{disk["id"]}" ovf:fileRef="{disk.get("fileRef", file_id)}" '
                          f'ovf:format="{fmt}"/>')
    for extra in extra_files:
        files.append(f'<File ovf:href="{extra["href"]}" ovf:id="{extra["id"]}"/>')
    items = []
    for n, disk_id in enumerate(attach if attach is not None else [d["id"] for d in disks]):
        items.append(f"<Item><rasd:AddressOnParent>{n}</rasd:AddressOnParent>"
                     f"<rasd:ElementName>Hard disk {n + 1}</rasd:ElementName>"
                     f"<rasd:HostResource>ovf:/disk/{disk_id}</rasd:HostResource>"
                     f"<rasd:InstanceID>{n + 10}</rasd:InstanceID>"
                     f"<rasd:ResourceType>17</rasd:ResourceType></Item>")
    text = f"""<?xml version="1.0" encoding="UTF-8"?>{doctype}
<Envelope xmlns="{ns}" xmlns:ovf="{ns}"
 xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">
  <References>{''.join(files)}</References>
  <DiskSection><Info>Virtual disks</Info>{''.join(disk_lines)}</DiskSection>
  <VirtualSystem ovf:id="vm">
    <Info>A virtual machine</Info><Name>vm</Name>
    <VirtualHardwareSection><Info>Virtual hardware</Info>
      <Item><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceSubType>lsilogic</rasd:ResourceSubType><rasd:ResourceType>6</rasd:ResourceType></Item>
      {''.join(items)}{extra_items}
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"""
    return text.encode()


def tar_bytes(members: list, fmt: int = tarfile.USTAR_FORMAT) -> bytes:
    """A tar of `members`: (name, bytes) or (TarInfo, bytes | None) in this order."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for name, data in members:
            info = name if isinstance(name, tarfile.TarInfo) else tarfile.TarInfo(name)
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def manifest(files: dict[str, bytes], alg: str = "SHA256") -> bytes:
    return "".join(f"{alg}({name})= {hashlib.new(alg.lower(), data).hexdigest()}\n"
                   for name, data in files.items()).encode()


def make_ova(disks: list[tuple[str, bytes, int]], *, attach: list[str] | None = None,
             with_manifest: bool | str = True, ovf: bytes | None = None,
             extra: list = (), fmt: int = tarfile.USTAR_FORMAT, fmt_uri: str = VMDK_STREAM_URI,
             ) -> bytes:
    """An OVA of `disks` = [(href, image bytes, virtual size)], disk ids disk1..N; `attach`
    orders them by disk id. `with_manifest` True/"SHA256"/"SHA1"/False."""
    specs = [{"id": f"disk{n}", "href": href, "capacity": vsize, "size": len(image),
              "format": fmt_uri} for n, (href, image, vsize) in enumerate(disks, start=1)]
    ovf = ovf if ovf is not None else ovf_xml(specs, attach)
    members = [("vm.ovf", ovf)] + [(href, image) for href, image, _ in disks]
    if with_manifest:
        alg = with_manifest if isinstance(with_manifest, str) else "SHA256"
        members.append(("vm.mf", manifest(dict(members), alg)))
    return tar_bytes(members + list(extra), fmt)


def ova_of_stream_vmdk(tmpdir: Path, **kwargs) -> bytes:
    """A one-disk OVA around qemu's streamOptimized VMDK of guest_raw()."""
    vmdk = stream_vmdk(tmpdir)
    return make_ova([("disk1.vmdk", vmdk, 2 * MiB)], **kwargs)
