"""Which Btrfs subvolume holds the Linux root: the default one, or the one /etc/fstab names.

Fedora keeps the root in subvolume ``root`` with the top level as the default subvolume; openSUSE
makes ``@`` (or a snapshot under it) the default; others name ``subvol=``/``subvolid=`` in fstab. A
subvolume is a root when it passes the same rule as any filesystem; among several (snapshots look
like roots too) the one whose own /etc/fstab mounts it at ``/`` wins, then the default subvolume.
"""

from __future__ import annotations

from vmimport.inspect.budget import InspectionLimit
from vmimport.inspect.filesystems import BtrfsFS
from vmimport.inspect.linux import fstab_entries, root_verdict

MAX_SUBVOLUMES = 64


class SubvolumeFS(BtrfsFS):
    """One Btrfs subvolume seen as a filesystem of its own (its root directory is '/')."""

    def __init__(self, base: BtrfsFS, subvolume):
        super().__init__(base.fstype, base.impl, base.budget)
        self.subvolume = subvolume
        self.path = subvolume.path or "/"
        self.id = subvolume.objectid

    def root(self):
        return self.subvolume.root


def _mounted_subvolume(fs: BtrfsFS, mountpoint: str) -> tuple[str | None, int | None]:
    """The (subvol=, subvolid=) that ``fs``'s /etc/fstab gives for ``mountpoint`` (Btrfs entries only)."""
    for spec, where, kind, options in fstab_entries(fs):
        if where != mountpoint or kind != "btrfs":
            continue
        path, ident = None, None
        for opt in options.split(","):
            key, _, value = opt.partition("=")
            if key == "subvol":
                path = value.strip("/")
            elif key == "subvolid" and value.isdigit():
                ident = int(value)
        return path, ident
    return None, None


def find_root_subvolume(fs: BtrfsFS) -> tuple[BtrfsFS | None, list[str]]:
    """The subvolume holding the Linux root (or ``fs`` itself when its default subvolume is one), and notes."""
    notes: list[str] = []
    default_id = fs.impl.default_subvolume.objectid
    candidates = []
    for count, sub in enumerate(fs.impl.subvolumes()):
        if count >= MAX_SUBVOLUMES:
            raise InspectionLimit(f"a Btrfs filesystem has more than {MAX_SUBVOLUMES} subvolumes")
        fs.budget.check()
        view = SubvolumeFS(fs, sub)
        if root_verdict(view)[0]:
            candidates.append(view)
    if not candidates:
        return None, notes
    for view in candidates:  # a subvolume whose own fstab mounts it at /
        path, ident = _mounted_subvolume(view, "/")
        if (path is not None and path == view.path.strip("/")) or ident == view.id:
            notes.append(f"Btrfs subvolume {view.path} (id {view.id}) holds the root, as its /etc/fstab says")
            return view, notes
    for view in candidates:
        if view.id == default_id:
            notes.append(f"Btrfs default subvolume {view.path} (id {view.id}) holds the root")
            return view, notes
    if len(candidates) == 1:
        notes.append(f"Btrfs subvolume {candidates[0].path} (id {candidates[0].id}) holds the root")
        return candidates[0], notes
    notes.append("Btrfs subvolumes " + ", ".join(v.path for v in candidates) + " all look like roots and none is "
                 "named by its /etc/fstab or is the default subvolume")
    return None, notes


def boot_subvolume(fs: BtrfsFS, root: BtrfsFS) -> BtrfsFS | None:
    """The subvolume the root's fstab mounts at /boot, when /boot is a subvolume of the same filesystem."""
    path, ident = _mounted_subvolume(root, "/boot")
    if path is None and ident is None:
        return None
    for count, sub in enumerate(fs.impl.subvolumes()):
        if count >= MAX_SUBVOLUMES:
            break
        if (path is not None and (sub.path or "") == path) or sub.objectid == ident:
            return SubvolumeFS(fs, sub)
    return None
