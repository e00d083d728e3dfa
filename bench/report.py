"""The benchmark's output: the machine and versions, a table (figure, baseline, ratio, target,
pass/fail) for the terminal and for BENCHMARKS.md, and the JSON of everything measured."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from .disks import MiB, QEMU_IMG, human


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        pass
    return {"cpu_model": cpu, "cores": os.cpu_count(), "memory_bytes": mem,
            "kernel": platform.release(), "python": platform.python_version(),
            "loadavg_at_start": list(os.getloadavg()),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def versions() -> dict:
    def pkg(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    try:
        qemu = subprocess.run([QEMU_IMG, "--version"], capture_output=True,
                              text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        qemu = None
    try:
        wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
        wrk_version = (wrk.stdout + wrk.stderr).splitlines()[0]
    except (OSError, IndexError):
        wrk_version = None
    try:
        here = Path(__file__).parent
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=here).stdout.strip() or None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, cwd=here).stdout.strip()
        if commit and dirty:
            commit += " + uncommitted changes"
    except OSError:
        commit = None
    return {"vmimport": pkg("vmimport"), "vmimport_commit": commit, "qemu_img": qemu,
            "moto": pkg("moto"), "wrk": wrk_version, "boto3": pkg("boto3")}


# ------------------------------------------------------------------ the table


def _mib(n) -> str:
    return f"{n / MiB:.0f} MiB" if n else "-"


def _verdict(ok) -> str:
    return "-" if ok is None else ("PASS" if ok else "FAIL")


def _verdict_naming(checks: dict[str, bool]) -> str:
    """PASS, or FAIL naming the checks that failed."""
    failed = [name for name, passed in checks.items() if not passed]
    return "FAIL (" + ", ".join(failed) + ")" if failed else "PASS"


def table_rows(results: dict) -> list[tuple[str, ...]]:
    """(section, item, measured, baseline, ratio, target, result) for every figure."""
    rows = []
    for r in results.get("conversion", []):
        item = r["format"] + ("" if r.get("disk", "bench") == "bench" else f" [{r['disk']}]")
        if r.get("status") != "measured":
            rows.append(("conversion", item, r.get("status", ""), "", "", "", "-"))
            continue
        store = r.get("vmimport_store_median")
        rows.append(("conversion", item,
                     f"{r['vmimport_median']:.2f} s ("
                     + (f"store {store:.2f} s, " if store is not None else "")
                     + f"{r['vmimport_cpu_median']:.2f} CPU-s), "
                     f"PSS {_mib(r['vmimport_peak_rss'])}",
                     f"qemu-img {r['qemu_median']:.2f} s ({r['qemu_cpu_median']:.2f} CPU-s), "
                     f"RSS {_mib(r['qemu_peak_rss'])}",
                     f"x{r['speedup']:.2f} speed",
                     f">= {r['target_speedup']:.1f}x, <= 256 MiB",
                     _verdict_naming({"speed": r["speed_pass"], "PSS": r["rss_pass"]})))
    for r in results.get("growth", []):
        if "virtual_size" not in r:
            rows.append(("growth", r["format"], r.get("status", ""), "", "", "", "-"))
            continue
        item = f"{r['format']} {human(r['virtual_size'])}"
        if r["status"] == "error":
            rows.append(("growth", item, "error", "", "", "", "FAIL"))
            continue
        measured = f"{r['vmimport_median']:.2f} s, PSS {_mib(r['vmimport_peak_rss'])}"
        if r["status"] == "timeout":
            measured = (f"> {r['vmimport_median']:.0f} s (cancelled at {r.get('progress')}%; "
                        f"~{r.get('estimated_seconds')} s est.)")
        rows.append(("growth", item, measured, f"qemu-img {r['qemu_median']:.2f} s",
                     f"time x{r['time_ratio']:.2f}, PSS x{r['rss_ratio']:.2f}",
                     "<= 1.2x of smallest", _verdict(r.get("pass_"))))
    rows += [_export_row(r) for r in results.get("export", [])]
    for r in results.get("api", []):
        if r.get("status") != "measured":
            rows.append(("api", f"{r['server']} {r['action']}", r.get("status", ""), "", "",
                         "", "-"))
            continue
        where = f" [{r['database']}]" if r.get("database") else ""
        if r.get("api_processes"):
            where = f" [{r.get('database')}, {r['api_processes']} API " \
                    f"process{'es' if r['api_processes'] > 1 else ''}]"
        if r["action"].startswith("API process memory"):
            rows.append(("api", r["action"] + where, f"peak RSS {_mib(r['peak_rss'])}", "", "",
                         "<= 150 MiB", _verdict(r["memory_pass"])))
            continue
        if r["action"].startswith("ImportImage"):
            rows.append(("api", r["action"] + where,
                         f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms",
                         f"{r['calls']} calls, {r['converting_at_start']}->"
                         f"{r['converting_at_end']} converting", "", "p99 < 100 ms",
                         _verdict(r["p99_pass"])))
            continue
        measured = f"{r['rps']:.0f} req/s, p99 {r['p99_ms']:.1f} ms"
        if r.get("cpu_ms_per_request") is not None:
            measured += f", {r['cpu_ms_per_request']:.2f} CPU-ms/req"
        if r["server"] == "moto":
            rows.append(("api", f"moto {r['action']}", measured, "(baseline)", "", "", "-"))
            continue
        rows.append(("api", r["action"] + where, measured,
                     f"moto {r['baseline_rps']:.0f} req/s" if "baseline_rps" in r else "no moto",
                     f"x{r['ratio']:.1f} req/s" if "ratio" in r else "",
                     ">= 20x, p99 < 50 ms",
                     _verdict_naming({"req/s": r.get("rps_pass", False),
                                      "p99": r["p99_pass"]})))
    for r in results.get("api_abuse", []):
        rows.append(("api_abuse", "DescribeImages, another key abusing",
                     f"p50 {r['abused_p50_ms']:.1f} ms, p99 {r['abused_p99_ms']:.1f} ms",
                     f"alone p50 {r['quiet_p50_ms']:.1f} ms, p99 {r['quiet_p99_ms']:.1f} ms",
                     f"x{r['p99_ratio']:.2f} p99", f"p99 < {r['target_p99_ms']} ms",
                     _verdict(r["p99_pass"])))
    for r in results.get("s3", []):
        rows.append(("s3", f"aws s3 cp {r['direction']} {r['size'] // MiB} MiB",
                     f"{r['vmimport_median']:.2f} s, PSS {_mib(r['vmimport_peak_pss'])}",
                     f"SeaweedFS {r['seaweedfs_median']:.2f} s", f"x{r['ratio']:.2f} speed",
                     (f">= {r['target']:.1f}x, " if r.get("target") else "") + "<= 256 MiB",
                     _verdict(r["pass_"])))
    for r in results.get("inspection", []):
        if r.get("status") != "measured":
            rows.append(("inspection", r.get("disk", "inspect_disk"), r.get("status", ""), "",
                         "", "", "-"))
            continue
        rows.append(("inspection", r["disk"], f"{r['median_seconds'] * 1000:.1f} ms median",
                     f"max {r['max_seconds'] * 1000:.1f} ms", "",
                     f"< {r.get('target_seconds', 0.3) * 1000:.0f} ms median",
                     _verdict(r["pass_"])))
    return rows


def _size(n: int, allocated: int) -> str:
    return _mib(n) + (f" ({_mib(allocated)} allocated)" if allocated < 0.9 * n else "")


def _export_row(r: dict) -> tuple[str, ...]:
    """An export format: speed and PSS against its target, both tools' output sizes, and
    whether ``qemu-img compare`` found the export identical to the raw disk."""
    if r.get("status") != "measured":
        return ("export", r["format"], r.get("status", ""), "", "", "",
                "FAIL (" + r.get("message", "")[:80] + ")")
    written = r.get("vmimport_write_median")
    return ("export", r["format"],
            f"{r['vmimport_median']:.2f} s ("
            + (f"write {written:.2f} s, " if written is not None else "")
            + f"{r['vmimport_cpu_median']:.2f} CPU-s), "
            f"{_size(r['vmimport_bytes'], r['vmimport_allocated_bytes'])}, "
            f"PSS {_mib(r['vmimport_peak_rss'])}",
            f"qemu-img {r['qemu_median']:.2f} s ({r['qemu_cpu_median']:.2f} CPU-s), "
            f"{_size(r['qemu_bytes'], r['qemu_allocated_bytes'])}",
            f"x{r['speedup']:.2f} speed, size x{r['size_ratio']:.2f}",
            f">= {r['target_speedup']:.1f}x, <= 256 MiB, identical",
            _verdict_naming({"speed": r["speed_pass"], "PSS": r["rss_pass"],
                             "differs from the raw disk": r["identical"]}))


HEADERS = ("section", "item", "measured", "baseline", "ratio", "target", "result")


def text_table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(HEADERS, *rows)]
    line = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip()
    return "\n".join([line(HEADERS), line(tuple("-" * w for w in widths)),
                      *(line(r) for r in rows)])


def markdown_table(rows: list[tuple[str, ...]]) -> str:
    esc = lambda x: str(x).replace("|", "\\|")
    out = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    out += ["| " + " | ".join(esc(x) for x in r) + " |" for r in rows]
    return "\n".join(out)


def missed(rows: list[tuple[str, ...]]) -> list[str]:
    return [f"{r[0]} {r[1]}: {r[2]}" + (f" ({r[4]} vs {r[3]})" if r[4] else "")
            + f"; target {r[5]}" for r in rows if r[6].startswith("FAIL")]


def write_json(results: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")


def print_report(results: dict, out=sys.stdout) -> list[tuple[str, ...]]:
    rows = table_rows(results)
    m, v = results["machine"], results["versions"]
    print(f"\nvmimport benchmark  {m['date']}  {m['cpu_model']}, {m['cores']} cores, "
          f"load {m['loadavg_at_start'][0]:.2f}", file=out)
    print(f"vmimport {v['vmimport']} ({v['vmimport_commit']}), {v['qemu_img']}, "
          f"moto {v['moto']}, {v['wrk']}", file=out)
    print(f"command: {results['command']}\n", file=out)
    print(text_table(rows), file=out)
    misses = missed(rows)
    print("\ntargets missed: " + (str(len(misses)) if misses else "none"), file=out)
    for line in misses:
        print(f"  - {line}", file=out)
    return rows
