"""Test disks for the benchmark, built from Debian tools only (sfdisk, mkfs.ext4, qemu-img, tar).

The base disk is a sparse raw file: an MBR with GRUB's boot code and one active Linux partition
starting at 1 MiB, an ext4 root filesystem (``mkfs.ext4 -d``: os-release, fstab, a kernel, the
host's x86_64 bash) at its start, and then ``data_size`` bytes of mixed data scattered over the
rest of the disk in 256 KiB pieces: random (incompressible), text-like (compresses ~3x, every
piece unique so block dedup gains nothing) and explicitly written zeros. Every other format is
rendered from that raw file by ``qemu-img convert`` (and OVA by tar), so all formats carry the
same guest bytes. Larger virtual sizes ("growth") carry exactly the same data: only the virtual
size changes.

Everything is cached in ``cache_dir`` under names that encode the recipe, so a second run reuses
the disks.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import tarfile
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

KiB, MiB, GiB, TiB = 1024, 1024**2, 1024**3, 1024**4
RECIPE_VERSION = 2  # bump when the recipe changes, so cached disks are rebuilt
PIECE = 256 * KiB
QEMU_IMG = shutil.which("qemu-img") or "/usr/bin/qemu-img"
GRUB_BOOT_IMG = Path("/usr/lib/grub/i386-pc/boot.img")


@dataclass(frozen=True)
class Format:
    """One input format: how qemu-img renders it, how it is declared and read back."""

    name: str  # the benchmark's name, e.g. "vmdk-stream"
    declared: str  # DiskContainer.Format
    qemu_fmt: str  # qemu-img -f for the baseline ("" = special, see baseline_command)
    create: tuple[str, ...] = ()  # qemu-img convert -O ... options
    suffix: str = ".img"
    target: float = 1.0  # speed target vs qemu-img (x)


FORMATS: dict[str, Format] = {f.name: f for f in [
    Format("raw", "raw", "raw", suffix=".raw"),
    Format("vmdk-stream", "vmdk", "vmdk", ("-O", "vmdk", "-o", "subformat=streamOptimized"),
           ".vmdk", target=3.0),
    Format("vmdk-sparse", "vmdk", "vmdk", ("-O", "vmdk", "-o", "subformat=monolithicSparse"),
           ".sparse.vmdk"),
    Format("vhd-dynamic", "vhd", "vpc", ("-O", "vpc", "-o", "subformat=dynamic,force_size=on"),
           ".vhd"),
    Format("vhd-fixed", "vhd", "vpc", ("-O", "vpc", "-o", "subformat=fixed,force_size=on"),
           ".fixed.vhd"),
    Format("vhdx", "vhdx", "vhdx", ("-O", "vhdx"), ".vhdx"),
    Format("qcow2", "qcow2", "qcow2", ("-O", "qcow2"), ".qcow2"),
    Format("qcow2-compressed", "qcow2", "qcow2", ("-O", "qcow2", "-c"), ".z.qcow2"),
    Format("ova", "ova", "", (), ".ova", target=3.0),
]}


@dataclass(frozen=True)
class DiskSpec:
    """The base disk's recipe."""

    virtual_size: int = 4 * GiB
    data_size: int = 1229 * MiB  # ~1.2 GiB of mixed data (+ the filesystem)
    fs_size: int = 64 * MiB
    seed: int = 6

    @property
    def key(self) -> str:
        return (f"v{RECIPE_VERSION}-{self.virtual_size // MiB}M-{self.data_size // MiB}M-"
                f"{self.fs_size // MiB}M-s{self.seed}")


def human(n: int) -> str:
    """4294967296 -> '4 GiB', 67108864 -> '64 MiB'."""
    for unit, size in (("TiB", TiB), ("GiB", GiB), ("MiB", MiB)):
        if n >= size:
            return f"{n / size:g} {unit}"
    return f"{n} B"


def run(*cmd, **kw) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([str(c) for c in cmd], check=True, capture_output=True, **kw)
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed: "
                           f"{e.stderr.decode(errors='replace').strip()}") from None


# ------------------------------------------------------------------ the guest filesystem

OS_RELEASE = ('PRETTY_NAME="Ubuntu 22.04.3 LTS"\nNAME="Ubuntu"\nVERSION_ID="22.04"\n'
              'VERSION="22.04.3 LTS (Jammy Jellyfish)"\nVERSION_CODENAME=jammy\nID=ubuntu\n'
              'ID_LIKE=debian\n')
KERNEL = "5.15.0-91-generic"
WORDS = ("the of and to in is for that with on kernel module systemd journal network device "
         "config /etc/fstab /usr/lib ubuntu root:x:0:0 mount error warning info debug 0x7f3a "
         "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor").split()


def _text(rng: random.Random, size: int) -> bytes:
    out, n = [], 0
    while n < size:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randrange(4, 16))) + "\n"
        out.append(line)
        n += len(line)
    return "".join(out).encode()[:size]


def _rootfs(root: Path, fs_uuid: str, rng: random.Random, fs_size: int) -> None:
    """A small Linux root filling about a third of a ``fs_size`` filesystem."""
    files = {
        "etc/os-release": OS_RELEASE,
        "etc/hostname": "bench-guest\n",
        "etc/fstab": f"UUID={fs_uuid} / ext4 defaults 0 1\n",
        "etc/passwd": "root:x:0:0:root:/root:/bin/bash\n",
        "boot/grub/grub.cfg": f"linux /boot/vmlinuz-{KERNEL} root=UUID={fs_uuid} ro\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "usr/bin").mkdir(parents=True, exist_ok=True)
    bash = Path("/usr/bin/bash")
    if bash.exists():
        shutil.copyfile(bash, root / "usr/bin/bash")
    (root / "bin").symlink_to("usr/bin")
    (root / f"lib/modules/{KERNEL}").mkdir(parents=True)
    (root / f"boot/vmlinuz-{KERNEL}").write_bytes(rng.randbytes(fs_size // 8))
    (root / f"boot/initrd.img-{KERNEL}").write_bytes(rng.randbytes(fs_size // 16))
    docs = root / "usr/share/doc/bench"
    docs.mkdir(parents=True)
    for i in range(fs_size // (6 * MiB)):
        (docs / f"file{i:02d}.txt").write_bytes(_text(rng, 256 * KiB))


def _sparse_copy_into(src: Path, dst_fd: int, offset: int) -> None:
    with open(src, "rb") as f:
        pos = 0
        while chunk := f.read(MiB):
            if chunk.count(0) != len(chunk):
                os.pwrite(dst_fd, chunk, offset + pos)
            pos += len(chunk)


def _build_base(path: Path, spec: DiskSpec) -> None:
    build_ext4_disk(path, spec.virtual_size, spec.fs_size, b"0x4d424e43", spec.seed,
                    fill_root=lambda root, fs_uuid, rng: _rootfs(root, fs_uuid, rng, spec.fs_size),
                    fill_rest=lambda fd, rng: _write_data(fd, spec, rng))


def build_ext4_disk(path: Path, virtual_size: int, fs_size: int, label_id: bytes, seed: int,
                    fill_root, fill_rest) -> None:
    """An MBR disk of ``virtual_size`` with one bootable ext4 partition at 1 MiB made by
    ``mkfs.ext4 -d`` from the tree ``fill_root(root, fs_uuid, rng)`` writes, GRUB's boot code
    when installed, then ``fill_rest(fd, rng)`` writes the rest; one seeded ``rng`` for all,
    so a spec always gives the same bytes (the cache's name is the spec)."""
    rng = random.Random(seed)
    fs_uuid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".rootfs-") as tmp:
        root, fs_img = Path(tmp) / "root", Path(tmp) / "fs.img"
        root.mkdir()
        fill_root(root, fs_uuid, rng)
        env = {**os.environ, "E2FSPROGS_FAKE_TIME": "1700000000"}
        run("mkfs.ext4", "-q", "-F", "-L", "root", "-U", fs_uuid, "-E", "root_owner=0:0",
            "-d", root, fs_img, f"{fs_size // KiB}k", env=env)
        shutil.rmtree(root)
        partial = path.with_suffix(".partial")
        with open(partial, "wb") as f:
            f.truncate(virtual_size)
        run("sfdisk", "-q", "--no-reread", "--no-tell-kernel", partial,
            input=b"label: dos\nlabel-id: " + label_id + b"\nstart=2048, type=83, bootable\n")
        fd = os.open(partial, os.O_RDWR)
        try:
            if GRUB_BOOT_IMG.exists():
                os.pwrite(fd, GRUB_BOOT_IMG.read_bytes()[:440], 0)
            _sparse_copy_into(fs_img, fd, MiB)
            fill_rest(fd, rng)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(partial, path)


def _write_data(fd: int, spec: DiskSpec, rng: random.Random) -> None:
    """``data_size`` bytes in 256 KiB pieces at scattered 1 MiB-aligned slots after the fs:
    ~1/3 random, ~1/2 text-like (each piece unique), ~1/6 written zeros."""
    start = MiB + spec.fs_size + MiB
    slots = (spec.virtual_size - MiB - start) // MiB
    wanted = min(slots, -(-spec.data_size // MiB))
    chosen = sorted(rng.sample(range(slots), wanted))
    pool = _text(rng, 8 * MiB)
    remaining = spec.data_size
    serial = 0
    for slot in chosen:
        base = start + slot * MiB
        for piece in range(MiB // PIECE):
            if remaining <= 0:
                return
            size = min(PIECE, remaining)
            kind = rng.random()
            if kind < 1 / 3:
                data = rng.randbytes(size)
            elif kind < 5 / 6:
                at = rng.randrange(0, len(pool) - size)
                serial += 1
                data = (f"[{serial:012d}]".encode() + pool[at:at + size])[:size]
            else:
                data = bytes(size)
            os.pwrite(fd, data, base + piece * PIECE)
            remaining -= size


# ------------------------------------------------------------------ formats


def base_raw(cache_dir: Path, spec: DiskSpec) -> Path:
    """The raw base disk (built once per recipe)."""
    return cached_raw(cache_dir / f"base-{spec.key}.raw", lambda path: _build_base(path, spec))


def cached_raw(path: Path, build) -> Path:
    """``path``, made by ``build(path)`` when it is not in the cache yet."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        build(path)
    return path


def grown_raw(cache_dir: Path, spec: DiskSpec, virtual_size: int) -> Path:
    """The base disk's bytes with a larger virtual size (a sparse copy, truncated up)."""
    base = base_raw(cache_dir, spec)
    if virtual_size == spec.virtual_size:
        return base
    path = cache_dir / f"grown-{spec.key}-{virtual_size // MiB}M.raw"
    if not path.exists():
        partial = path.with_suffix(".partial")
        run("cp", "--sparse=always", base, partial)
        with open(partial, "r+b") as f:
            f.truncate(virtual_size)
        os.replace(partial, path)
    return path


def render(raw: Path, fmt: Format, out_dir: Path | None = None) -> Path:
    """``raw`` rendered as ``fmt`` next to it (cached)."""
    if fmt.name == "raw":
        return raw
    out_dir = out_dir or raw.parent
    out = out_dir / (raw.stem + fmt.suffix)
    if out.exists():
        return out
    partial = out.with_name(out.name + ".partial")
    if fmt.name == "ova":
        vmdk = render(raw, FORMATS["vmdk-stream"], out_dir)
        make_ova(vmdk, raw.stat().st_size, partial)
    else:
        run(QEMU_IMG, "convert", "-f", "raw", *fmt.create, raw, partial)
    os.replace(partial, out)
    return out


def make_ova(vmdk: Path, capacity: int, out: Path) -> None:
    """An OVA as ovftool writes it: the .ovf first, then the disk, then a SHA256 manifest."""
    disk_name = "disk1.vmdk"
    ovf = _ovf(disk_name, vmdk.stat().st_size, capacity).encode()
    sha = hashlib.sha256()
    with open(vmdk, "rb") as f:
        while chunk := f.read(8 * MiB):
            sha.update(chunk)
    manifest = (f"SHA256(bench.ovf)= {hashlib.sha256(ovf).hexdigest()}\n"
                f"SHA256({disk_name})= {sha.hexdigest()}\n").encode()
    import io
    with tarfile.open(out, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in (("bench.ovf", ovf),):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 1700000000, 0o644
            tar.addfile(info, io.BytesIO(data))
        info = tar.gettarinfo(str(vmdk), arcname=disk_name)
        info.mtime, info.uid, info.gid, info.uname, info.gname = 1700000000, 0, 0, "", ""
        with open(vmdk, "rb") as f:
            tar.addfile(info, f)
        info = tarfile.TarInfo("bench.mf")
        info.size, info.mtime, info.mode = len(manifest), 1700000000, 0o644
        tar.addfile(info, io.BytesIO(manifest))


def ova_member(path: Path, suffix: str = ".vmdk") -> tuple[int, int]:
    """(offset, size) of the first member ending in ``suffix`` inside an OVA (for the baseline)."""
    with tarfile.open(path, "r:") as tar:
        for member in tar:
            if member.name.endswith(suffix):
                return member.offset_data, member.size
    raise ValueError(f"{path} has no {suffix} member")


def _ovf(disk_name: str, file_size: int, capacity: int) -> str:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<Envelope vmw:buildId="build-1" xmlns="http://schemas.dmtf.org/ovf/envelope/1"
  xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
  xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
  xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
  xmlns:vmw="http://www.vmware.com/schema/ovf">
  <References>
    <File ovf:href="{disk_name}" ovf:id="file1" ovf:size="{file_size}"/>
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk ovf:capacity="{capacity}" ovf:capacityAllocationUnits="byte" ovf:diskId="vmdisk1"
      ovf:fileRef="file1"
      ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <NetworkSection>
    <Info>The list of logical networks</Info>
    <Network ovf:name="VM Network"><Description>The VM Network network</Description></Network>
  </NetworkSection>
  <VirtualSystem ovf:id="bench">
    <Info>A virtual machine</Info>
    <Name>bench</Name>
    <OperatingSystemSection ovf:id="94" vmw:osType="ubuntu64Guest">
      <Info>The kind of installed guest operating system</Info>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>bench</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>vmx-13</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:Description>Number of Virtual CPUs</rasd:Description>
        <rasd:ElementName>2 virtual CPU(s)</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>2</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:Description>Memory Size</rasd:Description>
        <rasd:ElementName>2048MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>2048</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:Description>SCSI Controller</rasd:Description>
        <rasd:ElementName>SCSI controller 0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>lsilogic</rasd:ResourceSubType>
        <rasd:ResourceType>6</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:ElementName>Hard disk 1</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>
        <rasd:InstanceID>4</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"""


def qemu_baseline_args(fmt: Format, image: Path) -> list[str]:
    """``qemu-img convert`` input arguments reading ``image`` as ``fmt`` (OVA: the VMDK member
    read in place through a raw offset/size window, no extraction)."""
    if fmt.name == "ova":
        offset, size = ova_member(image)
        spec = ('json:{"driver":"vmdk","file":{"driver":"raw","offset":%d,"size":%d,'
                '"file":{"driver":"file","filename":"%s"}}}' % (offset, size, image))
        return [spec]
    return ["-f", fmt.qemu_fmt, str(image)]
