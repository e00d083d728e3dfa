"""The ``booting`` phase: start the converted boot volume in QEMU and watch it come up.

The snapshot is copied to a temporary sparse raw file (only its stored blocks are written, so
it takes the snapshot's stored size on disk and is deleted afterwards); QEMU opens it with
``snapshot=on`` so the guest's writes go to a throw-away overlay and never reach our copy.
The guest has no network, ``boot_check_memory_mib`` of memory, SeaBIOS or OVMF as the decided
boot mode says, and ``boot_check_seconds`` to get there. Only the serial console is watched:
SeaBIOS (``graphics=off``) mirrors the text screen to it, so MBR, syslinux and GRUB messages
appear there too, and OVMF's console is the serial port when there is no display.

Reached: a Linux init took over (the kernel running ``/sbin/init``, systemd, sysvinit,
BusyBox init, a login prompt). Failed: a kernel panic, a GRUB rescue prompt, the firmware
finding nothing to boot, the time running out — the message says what was seen last.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from vmimport.blockstore.reader import SnapshotBlocks

from .errors import ImportFailure

log = logging.getLogger("vmimport.boot")

QEMU = "qemu-system-x86_64"
OVMF_CANDIDATES = ("/usr/share/ovmf/OVMF.fd", "/usr/share/OVMF/OVMF_CODE.fd",
                   "/usr/share/qemu/OVMF.fd")
CONSOLE_KEEP = 64 * 1024  # bytes of console output kept (the guest may print without end)
ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1bc")

# A line an image may print on its serial console to say it is up (from an init script or
# a unit), for inits that announce nothing there.
READY_LINE = "vmimport-boot-check: init reached"
# The hand-off to init, as the usual inits announce it.
REACHED = [
    (re.compile(re.escape(READY_LINE)), "the guest printed " + READY_LINE.replace(": ", " ")),
    (re.compile(r"Run (/\S*init|/bin/sh) as init process"), "the kernel started {0}"),
    (re.compile(r"systemd\[1\]: |Welcome to (?!GRUB).+!"), "systemd started"),
    (re.compile(r"INIT: version"), "sysvinit started"),
    (re.compile(r"init started: BusyBox"), "BusyBox init started"),
    (re.compile(r"\blogin: *$"), "a login prompt"),
]
# Dead ends: the import fails at once with what was seen.
FAILED = [
    (re.compile(r"Kernel panic - not syncing: (.*)"), "kernel panic: {0}"),
    (re.compile(r"grub rescue>"), "GRUB rescue prompt"),
    (re.compile(r"^grub> *$"), "GRUB stopped at its command prompt (its configuration did not boot)"),
    (re.compile(r"No bootable device"), "the firmware found no bootable device"),
    (re.compile(r"Boot failed: (.*)"), "the firmware could not boot the disk: {0}"),
    (re.compile(r"(Missing operating system|Invalid partition table|Error loading operating "
                r"system|Operating system not found)"), "the MBR boot code says: {0}"),
    (re.compile(r"(Boot error|Could not find kernel image: .*)"), "the boot loader says: {0}"),
    (re.compile(r"(UEFI Interactive Shell|Shell> )"),
     "the UEFI firmware found no boot loader and started its shell"),
    (re.compile(r"^\(initramfs\) *$|^dracut:/# *$"),
     "the initramfs gave up and started its shell (the root filesystem was not found)"),
    (re.compile(r"reboot: Restarting system"), "the guest rebooted"),
]
# Lines worth quoting when the end is not itself telling (e.g. "error: file ... not found").
TELLING = re.compile(r"^(error: .*|ALERT! .*|.*VFS: .*|.*[Nn]ot found.*|.*No such .*)$")


@dataclass
class BootResult:
    reached: str  # what showed the guest came up, e.g. "the kernel started /sbin/init"
    seconds: float


def qemu_available() -> bool:
    return shutil.which(QEMU) is not None


def ovmf_firmware() -> str | None:
    return next((path for path in OVMF_CANDIDATES if os.path.exists(path)), None)


def check_boot(blocks: SnapshotBlocks, boot_mode: str, *, seconds: float, memory_mib: int,
               work_dir: Path, stop=None) -> BootResult:
    """Boot ``blocks`` (the boot volume) and return what showed it came up, or raise
    ``ImportFailure`` ("ClientError: ... booting ..."). ``stop()`` is called while waiting
    and may raise to abandon the check (a cancelled task)."""
    if not qemu_available():
        raise ImportFailure(f"the boot check is on (boot_check) but {QEMU} is not installed "
                            "on the worker (Debian: qemu-system-x86)", "ServerError")
    firmware = []
    if boot_mode == "uefi":
        ovmf = ovmf_firmware()
        if ovmf is None:
            raise ImportFailure("the boot check needs OVMF for a UEFI image, and none is "
                                "installed on the worker (Debian: ovmf)", "ServerError")
        firmware = ["-bios", ovmf]
    work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="boot-", dir=work_dir) as tmp:
        image = Path(tmp) / "disk.raw"
        _materialize(blocks, image)
        started = time.monotonic()
        # KVM when it can be used; TCG when not, or when KVM fails on the guest's first
        # instructions (nested KVM has stopped on real-mode boot loaders: "KVM internal error").
        for accel in (["kvm", "tcg"] if _kvm_usable() else ["tcg"]):
            outcome, exited = _run(image, accel, firmware, memory_mib, seconds, stop, tmp)
            if outcome[0] or outcome[1] or "KVM internal error" not in outcome[3]:
                break
            log.warning("boot check: KVM failed (%s); trying again with TCG",
                        next(line for line in outcome[3].splitlines()
                             if "KVM internal error" in line)[:200])
        elapsed = time.monotonic() - started
    reached, failure, console, errors = outcome
    if reached:
        log.info("boot check: %s after %.1fs (%s)", reached, elapsed, boot_mode)
        return BootResult(reached=reached, seconds=elapsed)
    why = failure or (f"QEMU stopped: {errors.strip()[-300:]}" if exited and errors.strip()
                      else "the guest stopped" if exited else
                      f"the guest did not reach init within {seconds:g}s")
    seen = _last_seen(console)
    raise ImportFailure(f"Unable to boot the image [booting] {why}"
                        + (f"; last seen on the console: {seen}" if seen else
                           "; nothing was printed on the serial console"))


def _run(image: Path, accel: str, firmware: list[str], memory_mib: int, seconds: float, stop,
         tmp: str):
    argv = [QEMU, "-nodefaults", "-no-user-config", "-machine", "q35,graphics=off",
            "-accel", accel, "-m", str(memory_mib), "-smp", "1", "-display", "none",
            "-vga", "none", "-nic", "none", "-no-reboot", "-serial", "stdio",
            "-monitor", "none", *firmware,
            "-drive", f"file={image},format=raw,if=none,id=boot,snapshot=on,cache=unsafe",
            "-device", "ide-hd,drive=boot,bootindex=0"]
    env = dict(os.environ, TMPDIR=tmp)  # the snapshot=on overlay lives (and dies) here
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, start_new_session=True)
    try:
        outcome = _watch(proc, seconds, stop)
        exited = proc.poll() is not None
    finally:
        _stop(proc)
    return outcome, exited


def _kvm_usable() -> bool:
    if os.environ.get("VMIMPORT_BOOT_CHECK_ACCEL") == "tcg":
        return False
    return os.access("/dev/kvm", os.R_OK | os.W_OK)


def _materialize(blocks: SnapshotBlocks, path: Path) -> None:
    """The snapshot as a sparse raw file: only stored blocks are written (decrypted if need
    be, each checked against its digest as it is read)."""
    with open(path, "wb") as out:
        out.truncate(blocks.size)
        for index in blocks.allocated():
            os.pwrite(out.fileno(), blocks.read(index), index * blocks.block_size)


def _watch(proc: subprocess.Popen, seconds: float, stop):
    """Read the console until init is reached, a dead end shows, QEMU exits or time runs out.
    Returns (reached, failure, console text, QEMU's stderr)."""
    console = bytearray()
    errors = bytearray()
    lock = threading.Lock()

    def pump(stream, sink, limit):
        for chunk in iter(lambda: stream.read1(4096), b""):
            with lock:
                sink.extend(chunk)
                del sink[:-limit]

    readers = [threading.Thread(target=pump, args=(proc.stdout, console, CONSOLE_KEEP),
                                daemon=True),
               threading.Thread(target=pump, args=(proc.stderr, errors, 4096), daemon=True)]
    for reader in readers:
        reader.start()
    deadline = time.monotonic() + seconds
    reached = failure = None
    while True:
        exited = proc.poll() is not None
        if exited:
            for reader in readers:
                reader.join(timeout=2)
        with lock:
            text = _clean(bytes(console))
            kvm_stuck = b"KVM internal error" in errors  # QEMU pauses the guest for good
        reached, failure = _judge(text)
        if reached or failure or exited or kvm_stuck or time.monotonic() > deadline:
            break
        if stop is not None:
            stop()
        time.sleep(0.2)
    with lock:
        return reached, failure, _clean(bytes(console)), bytes(errors).decode("utf-8", "replace")


def _clean(raw: bytes) -> str:
    text = ANSI.sub(b"", raw).decode("utf-8", "replace").replace("\r", "\n")
    return "".join(ch for ch in text if ch == "\n" or ch.isprintable())


def _judge(text: str) -> tuple[str | None, str | None]:
    """(what showed init was reached, None) or (None, the dead end seen) or (None, None)."""
    for line in text.splitlines():
        for pattern, message in FAILED:
            match = pattern.search(line)
            if match:
                return None, message.format(*(g.strip() for g in match.groups()))
        for pattern, message in REACHED:
            match = pattern.search(line)
            if match:
                return message.format(*match.groups()), None
    return None, None


def _last_seen(console: str) -> str:
    """The telling lines (errors) and the last few lines, shortened to fit a status message."""
    lines = [line.strip() for line in console.splitlines() if line.strip()]
    for end, line in enumerate(lines):  # what follows a dead end (a panic's trace) says little
        if any(pattern.search(line) for pattern, _ in FAILED):
            lines = lines[:end]
            break
    telling = [line for line in lines if TELLING.match(line)][-2:]
    tail = [line for line in lines[-2:] if line not in telling]
    return " | ".join(telling + tail)[-400:]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        log.error("QEMU (pid %d) did not exit after SIGKILL", proc.pid)
