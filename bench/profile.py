"""Where the server's time goes: py-spy attached to `vmimport serve` while something runs.

Records collapsed stacks (``--format raw``; ``flamegraph.pl`` or speedscope turn them into a
picture) and summarises them: the functions that were on CPU most (self) and the vmimport
functions under which most samples fell (inclusive). py-spy needs ptrace permission
(``kernel.yama.ptrace_scope=0`` or root); without it the profile is reported as unavailable.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

PY_SPY = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")


class PySpy:
    def __init__(self, pid: int, out: Path, rate: int = 100):
        self.pid, self.out, self.rate = pid, Path(out), rate
        self.proc: subprocess.Popen | None = None
        self.error = ""

    def __enter__(self):
        if not Path(PY_SPY).exists():
            self.error = "py-spy is not installed (pip install -e '.[bench]')"
            return self
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [PY_SPY, "record", "--pid", str(self.pid), "--rate", str(self.rate), "--format",
             "raw", "--output", str(self.out), "--nonblocking", "--subprocesses"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        time.sleep(0.5)  # attach before the work starts
        if self.proc.poll() is not None:
            self.error = self.proc.stdout.read().decode(errors="replace").strip()[-300:]
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if not self.out.exists():
            self.error = self.proc.stdout.read().decode(errors="replace").strip()[-300:]

    def summary(self, top: int = 12) -> dict:
        if self.error or not self.out.exists():
            return {"status": "not available", "message": self.error or "no output"}
        return summarize(self.out, top)


_LINE = re.compile(r":\d+\)$")


def _frame(text: str) -> str:
    """'write_snapshot (vmimport/blockstore/writer.py:42)' -> without the line number."""
    return _LINE.sub(")", text.strip())


def summarize(path: Path, top: int = 12) -> dict:
    self_time: Counter = Counter()
    inclusive: Counter = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        raw = [f.strip() for f in stack.split(";") if f.strip()]
        frames = [_frame(f) for f in raw]
        if not frames:
            continue
        total += n
        self_time[raw[-1]] += n  # with its line: the line that was running
        for f in set(frames):
            if "vmimport/" in f or "vmimport." in f:
                inclusive[f] += n
    pct = lambda c: [{"frame": f, "percent": round(100 * n / total, 1)} for f, n in
                     c.most_common(top)]
    return {"status": "measured", "file": str(path), "samples": total,
            "self": pct(self_time), "vmimport_inclusive": pct(inclusive)}


def log_summary(summary: dict, log, top: int = 8) -> None:
    if summary.get("status") != "measured":
        log(f"    profile not available: {summary.get('message', '')}")
        return
    log(f"    profile ({summary['samples']} samples, {summary['file']}):")
    log("      on CPU (self):")
    for item in summary["self"][:top]:
        log(f"        {item['percent']:5.1f}%  {item['frame']}")
    log("      under vmimport functions (inclusive):")
    for item in summary["vmimport_inclusive"][:top]:
        log(f"        {item['percent']:5.1f}%  {item['frame']}")
