"""Inspection: `vmimport.inspect.inspect_disk` timed on the test suite's guest-disk fixtures
(``tests/guest_disks.py``) and on the benchmark's own disk, when both exist in this checkout."""

from __future__ import annotations

import importlib
import statistics
import sys
import time
from pathlib import Path

TARGET_SECONDS = 0.3
LAYOUT_TARGET_SECONDS = 0.05  # LVM, Btrfs subvolume and dynamic-disk fixtures (issue 20)
ROOT = Path(__file__).resolve().parent.parent


def run_inspection(cache: Path, bench_disk: Path | None, runs: int, log,
                   names: list[str] | None = None) -> list[dict]:
    try:
        inspect_disk = importlib.import_module("vmimport.inspect").inspect_disk
    except (ImportError, AttributeError) as exc:
        log(f"  not available: vmimport.inspect.inspect_disk ({exc})")
        return [{"section": "inspection", "status": "not available",
                 "message": f"vmimport.inspect.inspect_disk: {exc}"}]
    disks: dict[str, Path] = {}
    layouts: set[str] = set()
    rows: list[dict] = []
    try:
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        guest = importlib.import_module("tests.guest_disks")
        layouts = set(getattr(guest, "LAYOUT_NAMES", ()))
        for name in names or guest.NAMES:
            try:
                disks[name] = guest.build(name, cache / "guest-disks")
            except Exception as exc:  # a missing mkfs tool: say so, time the others
                rows.append({"section": "inspection", "disk": name, "status": "not built",
                             "message": str(exc)[:300]})
                log(f"  {name:32s} not built: {str(exc)[:120]}")
    except ImportError as exc:
        log(f"  tests/guest_disks.py not available ({exc}); timing the benchmark disk only")
    if bench_disk is not None:
        disks["bench-disk (4 GiB, ext4 MBR)"] = bench_disk
    for name, path in disks.items():
        size = path.stat().st_size
        times, last = [], None
        for _ in range(runs):
            with open(path, "rb") as f:
                t0 = time.perf_counter()
                last = inspect_disk(f, size)
                times.append(time.perf_counter() - t0)
        median = statistics.median(times)
        target = LAYOUT_TARGET_SECONDS if name in layouts else TARGET_SECONDS
        rows.append({"section": "inspection", "disk": name, "status": "measured",
                     "median_seconds": round(median, 4), "max_seconds": round(max(times), 4),
                     "runs": runs, "os": getattr(last, "os_name", None),
                     "incomplete": getattr(last, "incomplete", None),
                     "target_seconds": target, "pass_": median < target})
        log(f"  {name:32s} {median * 1000:8.1f} ms  {getattr(last, 'os_name', '') or ''}")
    measured = [r["median_seconds"] for r in rows if r["status"] == "measured"]
    if measured:
        rows.append({"section": "inspection", "disk": "all fixtures", "status": "measured",
                     "median_seconds": round(statistics.median(measured), 4),
                     "max_seconds": max(measured), "disks": len(measured),
                     "pass_": statistics.median(measured) < TARGET_SECONDS,
                     "all_pass": all(m < TARGET_SECONDS for m in measured)})
    return rows
