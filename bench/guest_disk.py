"""A bench disk that looks like a real guest (issue 22), built from Debian tools only.

The project's base disk (``disks.py``) is 256 KiB pieces of synthetic data; real OS disks are
not like that, and stream-optimized VMDK imports measured 3.8x qemu-img on the base disk but
2.0-2.4x on an independent realistic disk. This one is a raw MBR disk with:

- an ext4 root (``mkfs.ext4 -d``) holding real files copied from this machine (``/usr/bin``,
  ``/usr/lib``, ``/usr/share/doc``: ELF binaries, shared libraries, Python, text), generated
  logs (syslog-like, compress ~5-10x) and a package cache of incompressible ``.deb``-like
  blobs;
- after it, explicit zero runs (a zeroed swap area, ``dd if=/dev/zero`` style) and scattered
  4 KiB writes (half random, half text) over the rest of the disk, as a used guest leaves them.

The host files make the disk depend on the machine that builds it: the recipe key names the
sizes, the cached file is rebuilt only when the recipe changes. Every format is rendered from
the raw file by ``qemu-img convert`` (``disks.render``), as for the base disk.
"""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

from .disks import KERNEL, OS_RELEASE, GiB, KiB, MiB, _text, build_ext4_disk, cached_raw

GUEST_RECIPE_VERSION = 1
HOST_TREES = ("/usr/bin", "/usr/lib", "/usr/share/doc")
# Formats measured on the guest disk by default (the compressed ones the issue is about).
GUEST_FORMATS = ("vmdk-stream", "ova")


@dataclass(frozen=True)
class GuestSpec:
    virtual_size: int = 4 * GiB
    fs_size: int = 1280 * MiB
    host_files: int = 640 * MiB  # real files copied from HOST_TREES
    logs: int = 224 * MiB  # generated text logs
    blobs: int = 160 * MiB  # incompressible package cache
    zero_runs: int = 4  # explicit zero runs of zero_run bytes after the fs
    zero_run: int = 32 * MiB
    small_writes: int = 8192  # scattered 4 KiB writes after the fs (32 MiB)
    seed: int = 22

    @property
    def key(self) -> str:
        return (f"guest-v{GUEST_RECIPE_VERSION}-{self.virtual_size // MiB}M-{self.fs_size // MiB}M"
                f"-h{self.host_files // MiB}-l{self.logs // MiB}-b{self.blobs // MiB}"
                f"-z{self.zero_runs}x{self.zero_run // MiB}-w{self.small_writes}-s{self.seed}")


TINY_GUEST = GuestSpec(virtual_size=96 * MiB, fs_size=48 * MiB, host_files=12 * MiB,
                       logs=6 * MiB, blobs=4 * MiB, zero_runs=2, zero_run=2 * MiB,
                       small_writes=256)


def guest_raw(cache_dir: Path, spec: GuestSpec) -> Path:
    """The realistic guest disk as a raw file (built once per recipe)."""
    return cached_raw(cache_dir / f"{spec.key}.raw", lambda path: _build(path, spec))


def _copy_host_files(dest: Path, budget: int) -> int:
    """Regular files from HOST_TREES, in sorted order, until ``budget`` bytes; returns bytes."""
    copied = 0
    for tree in HOST_TREES:
        for dirpath, dirnames, filenames in os.walk(tree):
            dirnames.sort()
            for name in sorted(filenames):
                src = Path(dirpath) / name
                try:
                    if not src.is_file() or src.is_symlink():
                        continue
                    size = src.stat().st_size
                    if size == 0 or copied + size > budget:
                        continue
                    target = dest / src.relative_to("/")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src, target)
                except OSError:  # unreadable or vanished: skip it
                    continue
                copied += size
                if copied >= budget - 64 * KiB:
                    return copied
    return copied


def _log_lines(rng: random.Random, size: int, start: int) -> bytes:
    units = ("systemd[1]", "kernel", "sshd[812]", "cron[455]", "NetworkManager[601]",
             "dockerd[990]", "snapd[733]")
    out, n, t = [], 0, start
    while n < size:
        t += rng.randrange(0, 3)
        line = (f"Nov {1 + t // 86400 % 28:2d} {t // 3600 % 24:02d}:{t // 60 % 60:02d}:"
                f"{t % 60:02d} guest {rng.choice(units)}: "
                + _text(rng, rng.randrange(30, 140)).decode().replace("\n", " ") + "\n")
        out.append(line)
        n += len(line)
    return "".join(out).encode()[:size]


def _rootfs(root: Path, fs_uuid: str, rng: random.Random, spec: GuestSpec) -> None:
    files = {"etc/os-release": OS_RELEASE, "etc/hostname": "guest\n",
             "etc/fstab": f"UUID={fs_uuid} / ext4 defaults 0 1\n",
             "boot/grub/grub.cfg": f"linux /boot/vmlinuz-{KERNEL} root=UUID={fs_uuid} ro\n"}
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    _copy_host_files(root, spec.host_files)
    logs = root / "var/log"
    logs.mkdir(parents=True, exist_ok=True)
    per_log = 8 * MiB
    for i in range(max(1, spec.logs // per_log)):
        (logs / f"syslog.{i}").write_bytes(
            _log_lines(rng, min(per_log, spec.logs), 1700000000 + i * 86400))
    cache = root / "var/cache/apt/archives"
    cache.mkdir(parents=True)
    per_blob = 4 * MiB
    for i in range(max(1, spec.blobs // per_blob)):
        (cache / f"pkg{i:03d}_1.0_amd64.deb").write_bytes(rng.randbytes(min(per_blob, spec.blobs)))


def _build(path: Path, spec: GuestSpec) -> None:
    build_ext4_disk(path, spec.virtual_size, spec.fs_size, b"0x4d424e44", spec.seed,
                    fill_root=lambda root, fs_uuid, rng: _rootfs(root, fs_uuid, rng, spec),
                    fill_rest=lambda fd, rng: _write_tail(fd, spec, rng, MiB + spec.fs_size))


def _write_tail(fd: int, spec: GuestSpec, rng: random.Random, start: int) -> None:
    """Explicit zero runs, then scattered 4 KiB writes, over the disk after the filesystem."""
    free = spec.virtual_size - start
    zeros = bytes(spec.zero_run)
    for i in range(spec.zero_runs):
        at = start + (i + 1) * free // (spec.zero_runs + 2)
        os.pwrite(fd, zeros, at // MiB * MiB)
    pool = _text(rng, 4 * MiB)
    for at in sorted(rng.sample(range(start // (4 * KiB), spec.virtual_size // (4 * KiB)),
                                spec.small_writes)):
        if rng.random() < 0.5:
            data = rng.randbytes(4 * KiB)
        else:
            off = rng.randrange(0, len(pool) - 4 * KiB)
            data = pool[off:off + 4 * KiB]
        os.pwrite(fd, data, at * 4 * KiB)
