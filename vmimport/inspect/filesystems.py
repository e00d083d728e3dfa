"""Recognise a filesystem by its magic numbers and read it through the dissect packages.

:class:`GuestFS` gives the rest of ``inspect`` one small, bounded vocabulary over ext2/3/4, XFS,
Btrfs, NTFS and FAT: resolve a guest path (following the guest's symlinks *inside the guest*,
never on the host), read a bounded prefix of a file, list a directory up to a limit.
"""

from __future__ import annotations

import stat
import struct
import uuid
from abc import ABC, abstractmethod
from typing import Any, BinaryIO

from dissect.btrfs import Btrfs
from dissect.extfs import ExtFS
from dissect.fat import FATFS
from dissect.ntfs import NTFS
from dissect.util.stream import RangeStream
from dissect.xfs import XFS

from vmimport.inspect.budget import Budget, InspectionLimit

MAX_SYMLINK_HOPS = 40  # as Linux's MAXSYMLINKS
MAX_DIR_ENTRIES = 50_000  # entries scanned in one directory before giving up
MAX_PATH_DEPTH = 64
PROBE_BYTES = 0x10100  # covers the Btrfs superblock at 64 KiB


class FilesystemError(Exception):
    """A filesystem could not be opened or walked (corrupt or hostile); the message says why."""


def probe(head: bytes) -> str | None:
    """The filesystem (or container) whose signature starts ``head``, or None."""

    def at(offset: int, magic: bytes) -> bool:
        return head[offset : offset + len(magic)] == magic

    if len(head) >= 1024 + 0x68 and at(1024 + 0x38, b"\x53\xef"):
        compat, incompat = struct.unpack_from("<II", head, 1024 + 0x5C)
        if incompat & (0x40 | 0x80 | 0x200):  # extents, 64bit, flex_bg
            return "ext4"
        return "ext3" if compat & 0x4 else "ext2"
    if at(0, b"XFSB"):
        return "xfs"
    if at(0x10040, b"_BHRfS_M"):
        return "btrfs"
    if at(3, b"NTFS    "):
        return "ntfs"
    if at(3, b"-FVE-FS-"):
        return "BitLocker"
    if at(0, b"LUKS\xba\xbe") or at(0, b"SKUL\xba\xbe"):
        return "crypto_LUKS"
    if at(512, b"LABELONE") and at(512 + 24, b"LVM2 001"):
        return "LVM2_member"
    if at(3, b"EXFAT   "):
        return "exfat"
    if at(510, b"\x55\xaa") and (at(82, b"FAT32   ") or at(54, b"FAT16   ") or at(54, b"FAT12   ")):
        return "vfat"
    if at(0x8000, b"JFS1"):
        return "jfs"
    if at(4096 - 10, b"SWAPSPACE2") or at(4096 - 10, b"SWAP-SPACE"):
        return "swap"
    if at(0x8001, b"CD001"):
        return "iso9660"
    return None


def _pow2(value: int, low: int, high: int) -> bool:
    return low <= value <= high and value & (value - 1) == 0


def sanity_error(kind: str, head: bytes) -> str | None:
    """Why the superblock in ``head`` is unsafe to hand to dissect, or None.

    Some parsers do arithmetic with raw superblock fields before any read (dissect.extfs computes
    ``1024 << s_log_block_size``: with 0xFFFFFFFF that is a 512 MB integer and minutes of CPU), which
    the read budget cannot interrupt; so the fields that size everything are checked here first.
    """
    try:
        if kind in ("ext2", "ext3", "ext4"):
            sb = 1024
            log_block, log_cluster = struct.unpack_from("<II", head, sb + 0x18)
            blocks_per_group, _, inodes_per_group = struct.unpack_from("<III", head, sb + 0x20)
            inode_size = struct.unpack_from("<H", head, sb + 0x58)[0]
            desc_size = struct.unpack_from("<H", head, sb + 0xFE)[0]
            if log_block > 6 or log_cluster > 16:
                return f"absurd block size (s_log_block_size={log_block})"
            if not blocks_per_group or not inodes_per_group:
                return "zero blocks or inodes per group"
            if inode_size and not _pow2(inode_size, 128, 1024 << log_block):
                return f"invalid inode size {inode_size}"
            if desc_size > 1024:
                return f"invalid group descriptor size {desc_size}"
        elif kind == "xfs":
            blocksize = struct.unpack_from(">I", head, 4)[0]
            agblocks, agcount = struct.unpack_from(">II", head, 84)
            sectsize, inodesize = struct.unpack_from(">HH", head, 102)
            if not _pow2(blocksize, 512, 65536) or not _pow2(sectsize, 512, 32768) or not _pow2(inodesize, 256, 2048):
                return f"invalid block/sector/inode size ({blocksize}/{sectsize}/{inodesize})"
            if not agblocks or not 0 < agcount < (1 << 20):
                return f"invalid allocation groups ({agcount} x {agblocks} blocks)"
        elif kind == "btrfs":
            sectorsize, nodesize = struct.unpack_from("<II", head, 0x10000 + 0x90)
            if not _pow2(sectorsize, 512, 65536) or not _pow2(nodesize, 4096, 65536):
                return f"invalid sector/node size ({sectorsize}/{nodesize})"
        elif kind == "ntfs":
            bps, spc = struct.unpack_from("<HB", head, 11)
            if not _pow2(bps, 256, 4096):
                return f"invalid bytes per sector {bps}"
            if not (spc <= 128 and _pow2(spc, 1, 128)) and not 0xF4 <= spc <= 0xFF:
                return f"invalid sectors per cluster {spc}"
    except struct.error:
        return "truncated superblock"
    return None


class GuestFS(ABC):
    """A read-only filesystem inside the guest, addressed with '/'-separated guest paths."""

    case_insensitive = False

    def __init__(self, fstype: str, impl: Any, budget: Budget):
        self.fstype = fstype
        self.impl = impl
        self.budget = budget

    # --- backend primitives (overridden per filesystem)
    def root(self) -> Any:
        return self.impl.root

    @abstractmethod
    def node_kind(self, node: Any) -> str:  # "dir" | "file" | "link" | "other"
        """What a node is, in this filesystem's terms mapped to ours."""

    def link_target(self, node: Any) -> str:
        return node.link

    @abstractmethod
    def iter_children(self, node: Any):  # yields (name, node)
        """A directory's entries."""

    def child(self, node: Any, name: str) -> Any | None:
        want = name.casefold() if self.case_insensitive else name
        for count, (child_name, child) in enumerate(self.iter_children(node)):
            if count >= MAX_DIR_ENTRIES:
                raise InspectionLimit(f"a directory has more than {MAX_DIR_ENTRIES} entries")
            if count % 256 == 0:
                self.budget.check()
            if (child_name.casefold() if self.case_insensitive else child_name) == want:
                return child
        return None

    def open_node(self, node: Any) -> BinaryIO:
        return node.open()

    # --- the vocabulary the OS detectors use
    def resolve(self, path: str, follow_last: bool = True) -> Any | None:
        """The node at guest ``path`` (symlinks resolved inside this filesystem), or None."""
        todo = [p for p in reversed(path.split("/")) if p and p != "."]
        stack = [self.root()]
        hops = 0
        while todo:
            self.budget.check()
            name = todo.pop()
            if name == "..":
                if len(stack) > 1:
                    stack.pop()
                continue
            if self.node_kind(stack[-1]) != "dir" or len(stack) > MAX_PATH_DEPTH:
                return None
            node = self.child(stack[-1], name)
            if node is None:
                return None
            if self.node_kind(node) == "link" and (todo or follow_last):
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    raise FilesystemError(f"too many levels of symbolic links resolving {path}")
                target = self.link_target(node)
                if target.startswith("/"):
                    stack = [self.root()]
                parts = [p for p in target.split("/") if p and p != "."]
                if len(todo) + len(parts) > 4 * MAX_PATH_DEPTH:
                    raise FilesystemError(f"path too long resolving {path}")
                todo.extend(reversed(parts))
                continue
            stack.append(node)
        return stack[-1]

    def kind(self, path: str, follow_last: bool = True) -> str | None:
        node = self.resolve(path, follow_last)
        return None if node is None else self.node_kind(node)

    def is_dir(self, path: str) -> bool:
        return self.kind(path) == "dir"

    def is_file(self, path: str) -> bool:
        return self.kind(path) == "file"

    def readlink(self, path: str) -> str | None:
        node = self.resolve(path, follow_last=False)
        return self.link_target(node) if node is not None and self.node_kind(node) == "link" else None

    def read(self, path: str, limit: int = 64 * 1024) -> bytes | None:
        """Up to ``limit`` bytes of the regular file at ``path``, or None."""
        node = self.resolve(path)
        if node is None or self.node_kind(node) != "file":
            return None
        return self.open_node(node).read(limit)

    def open(self, path: str) -> BinaryIO | None:
        node = self.resolve(path)
        if node is None or self.node_kind(node) != "file":
            return None
        return self.open_node(node)

    def listdir(self, path: str, limit: int = 1000) -> list[str]:
        node = self.resolve(path)
        if node is None or self.node_kind(node) != "dir":
            return []
        names = []
        for count, (name, _) in enumerate(self.iter_children(node)):
            if count % 256 == 0:
                self.budget.check()
            if count >= MAX_DIR_ENTRIES or len(names) >= limit:
                break
            if name not in (".", ".."):
                names.append(name)
        return names


_MODE_KIND = {stat.S_IFDIR: "dir", stat.S_IFREG: "file", stat.S_IFLNK: "link"}


class ExtOrXfs(GuestFS):
    def node_kind(self, node: Any) -> str:
        return _MODE_KIND.get(node.filetype, "other")

    def iter_children(self, node: Any):
        for entry in node.iterdir():
            yield entry.filename, entry


class BtrfsFS(GuestFS):
    def node_kind(self, node: Any) -> str:
        if node.is_symlink():
            return "link"
        if node.is_dir():
            return "dir"
        return "file" if node.is_file() else "other"

    def iter_children(self, node: Any):
        yield from node.iterdir()

    def child(self, node: Any, name: str) -> Any | None:
        try:  # a hashed lookup: no directory scan
            return node.subvolume.get(name, node)
        except FileNotFoundError:
            return None


class NtfsFS(GuestFS):
    case_insensitive = True

    def root(self) -> Any:
        return self.impl.mft.get(5)

    def node_kind(self, node: Any) -> str:
        if node.is_reparse_point():
            return "other"  # junctions and symlinks are not followed
        if node.is_dir():
            return "dir"
        return "file" if node.is_file() else "other"

    def iter_children(self, node: Any):
        for name, entry in node.listdir(ignore_dos=True).items():
            yield name, entry

    def child(self, node: Any, name: str) -> Any | None:
        try:  # the $I30 index is a B-tree with case-insensitive keys
            return node.index("$I30").search(name).dereference()
        except (KeyError, FileNotFoundError):
            return None


class FatFS(GuestFS):
    case_insensitive = True

    def node_kind(self, node: Any) -> str:
        return "dir" if node.is_directory() else "file"

    def iter_children(self, node: Any):
        # Walk the entries ourselves: the volume-label entry trips dissect.fat's own path lookup.
        for entry in node.iterdir():
            if entry.is_volume_id() or entry.name in (".", ".."):
                continue
            yield _fat_display_name(entry), entry

    def child(self, node: Any, name: str) -> Any | None:
        want = name.casefold()
        for count, (child_name, child) in enumerate(self.iter_children(node)):
            if count >= MAX_DIR_ENTRIES:
                raise InspectionLimit(f"a directory has more than {MAX_DIR_ENTRIES} entries")
            if want in (child_name.casefold(), (child.short_name or "").casefold()):
                return child
        return None


def _fat_display_name(entry: Any) -> str:
    """The name as Windows and Linux show it: a short name's NT case bits (0x08 base, 0x10 extension)."""
    name = entry.name
    if name != entry.short_name:
        return name  # a long name keeps its own case
    flags = entry.dirent.DIR_NTRes
    base, dot, ext = name.partition(".")
    return (base.lower() if flags & 0x08 else base) + dot + (ext.lower() if flags & 0x10 else ext)


def open_filesystem(kind: str, disk: BinaryIO, offset: int, size: int, budget: Budget) -> GuestFS:
    """Open the ``kind`` filesystem found at ``offset`` through dissect; FilesystemError if it cannot."""
    head = disk.pread(offset, min(PROBE_BYTES, size))
    problem = sanity_error(kind, head)
    if problem:
        raise FilesystemError(f"the {kind} superblock is damaged: {problem}")
    stream = RangeStream(disk, offset, size)
    try:
        if kind in ("ext2", "ext3", "ext4"):
            return ExtOrXfs(kind, ExtFS(stream), budget)
        if kind == "xfs":
            return ExtOrXfs(kind, XFS(stream), budget)
        if kind == "btrfs":
            return BtrfsFS(kind, Btrfs(stream), budget)
        if kind == "ntfs":
            return NtfsFS(kind, NTFS(stream), budget)
        if kind == "vfat":
            return FatFS(kind, FATFS(stream), budget)
    except InspectionLimit:
        raise
    except Exception as exc:  # dissect raises many types on corrupt input
        raise FilesystemError(f"cannot read the {kind} filesystem: {type(exc).__name__}: {exc}") from exc
    raise FilesystemError(f"{kind} is not a filesystem vmimport reads")


def identity(kind: str | None, head: bytes) -> tuple[str | None, str | None]:
    """(UUID, label) of the filesystem whose start is ``head``, as blkid prints them (for fstab's UUID=/LABEL=)."""

    def uid(at: int) -> str | None:
        raw = head[at : at + 16]
        return str(uuid.UUID(bytes=raw)) if len(raw) == 16 and any(raw) else None

    def text(at: int, n: int) -> str | None:
        raw = head[at : at + n].split(b"\0", 1)[0].strip()
        return raw.decode("utf-8", "replace") or None

    try:
        if kind in ("ext2", "ext3", "ext4"):
            return uid(1024 + 0x68), text(1024 + 0x78, 16)
        if kind == "xfs":
            return uid(32), text(108, 12)
        if kind == "btrfs":
            return uid(0x10020), text(0x1012B, 256)
        if kind == "swap":
            return uid(1024 + 12), text(1024 + 28, 16)
        if kind == "vfat":
            fat32 = head[82:87] == b"FAT32"
            serial = struct.unpack_from("<I", head, 67 if fat32 else 39)[0]
            label = text(71 if fat32 else 43, 11)
            return f"{serial >> 16:04X}-{serial & 0xFFFF:04X}", None if label == "NO NAME" else label
        if kind == "ntfs":
            return f"{struct.unpack_from('<Q', head, 72)[0]:016X}", None
    except struct.error:
        pass
    return None, None
