"""vmimport's benchmark: one command, every figure against a baseline measured in the same run.

    python -m bench [--quick] [--only conversion,growth,export,api,api_abuse,inspection,s3,boot]
                    [--formats raw,vmdk-stream]
                    [--runs N] [--out bench/results/latest.json] [--markdown BENCHMARKS.md]

Sections (issue 6): conversion (ImportImage end to end vs ``qemu-img convert -O raw``), growth
(4 GiB -> 64 GiB -> 1 TiB virtual with the same data), export (ExportImage as VMDK, VHD, RAW
vs ``qemu-img convert -f raw -O vmdk/vpc/raw``), api (signed Describe* and EBS reads under 32
connections with wrk vs moto's server, on SQLite and PostgreSQL; pages of a database grown to
100,000 tasks and images, and the API process's memory then; ImportImage latency while 4
imports convert), api_abuse
(a well-behaved client's DescribeImages latency while another key sends the worst requests the
limits allow, against the same client alone), s3 (``aws s3 cp`` up and down through vmimport
against SeaweedFS on this machine), inspection
(``vmimport.inspect.inspect_disk`` on the test fixtures). Disks are cached in --cache-dir.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import disks, guest_disk, report
from .disks import FORMATS, GiB, MiB, TiB

SECTIONS = ("conversion", "growth", "export", "api", "api_abuse", "inspection", "s3", "boot")
DEFAULT_CACHE = Path(os.environ.get("VMIMPORT_BENCH_CACHE",
                                    Path(tempfile.gettempdir()) / "vmimport-bench-cache"))
ROOT = Path(__file__).resolve().parent.parent
# Conversion and export race qemu-img (not reniced): their worker process runs at its priority.
EQUAL_FOOTING = {"VMIMPORT_WORKER_NICENESS": "0"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="1 run per figure, shorter load tests (~3 min once disks are cached)")
    p.add_argument("--tiny", action="store_true",
                   help="tiny disks and loads: checks that the benchmark runs (the test suite)")
    p.add_argument("--only", default=",".join(SECTIONS),
                   help=f"comma-separated sections (default all: {','.join(SECTIONS)})")
    p.add_argument("--formats", default=",".join(FORMATS),
                   help=f"conversion formats (default all: {','.join(FORMATS)}); a format the "
                        "server refuses is reported as unsupported")
    p.add_argument("--disks", default="bench,guest",
                   help="conversion disks (default bench,guest): 'bench' is the base disk of "
                        "256 KiB synthetic pieces (every format), 'guest' a realistic guest "
                        "disk (host files, logs, zero runs, 4 KiB writes; vmdk-stream and ova)")
    p.add_argument("--growth-formats", default="raw,vmdk-stream",
                   help="formats for the growth section (default raw,vmdk-stream)")
    p.add_argument("--runs", type=int, help="runs per figure, the median is reported "
                   "(default 5, --quick 1)")
    p.add_argument("--growth-timeout", type=float,
                   help="cancel a growth import after this many seconds (default 120, quick 30)")
    p.add_argument("--api-seconds", type=float, help="seconds per load test (default 10)")
    p.add_argument("--api-tasks", type=int, help="import tasks in the database (default 100)")
    p.add_argument("--api-databases", default="sqlite,postgresql",
                   help="api: the databases to run it on, each with its own server "
                        "(default sqlite,postgresql; PostgreSQL is started by scripts/postgres)")
    p.add_argument("--api-processes", default="0",
                   help="api: the servers' api_processes, each value a server of its own "
                        "(default 0: the server's default, one per core; e.g. 1,0 to compare)")
    p.add_argument("--api-scales", help="api: tasks and images the database is grown to for the "
                   "paged listings and the memory row (default 1000,100000; --quick 1000,10000; "
                   "'' for none)")
    p.add_argument("--import-calls", type=int,
                   help="ImportImage calls timed while 4 imports convert (default 100)")
    p.add_argument("--abuse-connections", type=int, default=4,
                   help="api_abuse: the abuser's concurrent connections (default 4, as many as "
                        "the server's API threads)")
    p.add_argument("--abuse-rounds", type=int,
                   help="api_abuse: rounds of (polls alone, polls under abuse) (default 3)")
    p.add_argument("--s3-size", type=int, help="s3: MiB copied up and down (default 1024, "
                   "--quick 256)")
    p.add_argument("--inspection-fixtures", help="comma-separated tests/guest_disks.py fixtures "
                   "(default all)")
    p.add_argument("--profile", default="",
                   help="comma-separated conversion formats to import once more under py-spy, "
                        "and/or 'api' to profile the server under the DescribeImages load; "
                        "collapsed stacks go next to --out, a summary into the results")
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE,
                   help=f"where test disks are built and kept (default {DEFAULT_CACHE})")
    p.add_argument("--out", type=Path, default=ROOT / "bench/results/latest.json",
                   help="JSON results (default bench/results/latest.json)")
    p.add_argument("--markdown", type=Path, help="also write the results as a Markdown "
                   "document (e.g. BENCHMARKS.md)")
    args = p.parse_args(argv)
    args.sections = [s.strip() for s in args.only.split(",") if s.strip()]
    args.format_names = [f.strip() for f in args.formats.split(",") if f.strip()]
    args.profile_names = {f.strip() for f in args.profile.split(",") if f.strip()}
    args.growth_names = [f.strip() for f in args.growth_formats.split(",") if f.strip()]
    for name in args.sections:
        if name not in SECTIONS:
            p.error(f"unknown section {name!r} (choose from {', '.join(SECTIONS)})")
    for name in args.format_names + args.growth_names:
        if name not in FORMATS:
            p.error(f"unknown format {name!r} (choose from {', '.join(FORMATS)})")
    quick = args.quick or args.tiny
    args.runs = args.runs or (1 if quick else 5)
    args.growth_timeout = args.growth_timeout or (10 if args.tiny else 30 if quick else 120)
    args.api_seconds = args.api_seconds or (1 if args.tiny else 5 if quick else 10)
    args.api_tasks = args.api_tasks if args.api_tasks is not None else (5 if args.tiny else 100)
    args.api_database_names = [d for d in args.api_databases.split(",") if d]
    args.api_process_list = [int(n) for n in args.api_processes.split(",") if n]
    if set(args.api_database_names) - {"sqlite", "postgresql"}:
        p.error("--api-databases: choose from sqlite, postgresql")
    scales = args.api_scales if args.api_scales is not None else (
        "" if args.tiny else "1000,10000" if quick else "1000,100000")
    args.api_scale_list = [int(n) for n in scales.split(",") if n]
    args.import_calls = (args.import_calls if args.import_calls is not None
                         else 5 if args.tiny else 30 if quick else 100)
    args.abuse_rounds = args.abuse_rounds or (1 if args.tiny else 2 if quick else 3)
    args.abuse_polls = 20 if args.tiny else 100
    args.s3_bytes = (args.s3_size or (8 if args.tiny else 256 if quick else 1024)) * MiB
    args.abuse_images = 2 if args.tiny else 5
    if args.tiny:
        args.spec = disks.DiskSpec(virtual_size=64 * MiB, data_size=8 * MiB, fs_size=8 * MiB)
        args.guest_spec = guest_disk.TINY_GUEST
        args.growth_sizes = [64 * MiB, 256 * MiB, 1 * GiB]
        args.fixtures = (args.inspection_fixtures or "ubuntu2204-ext4-mbr-bios").split(",")
    else:
        args.spec = disks.DiskSpec()
        args.guest_spec = guest_disk.GuestSpec()
        args.growth_sizes = [4 * GiB, 64 * GiB, 1 * TiB]
        args.fixtures = args.inspection_fixtures.split(",") if args.inspection_fixtures else None
    args.disk_names = [d for d in args.disks.split(",") if d]
    unknown = set(args.disk_names) - {"bench", "guest"}
    if unknown:
        raise SystemExit(f"unknown --disks {','.join(sorted(unknown))} (bench, guest)")
    return args


_T0 = time.perf_counter()


@contextlib.contextmanager
def _database(name: str, work: Path):
    """The URL of the database the api section runs on: None for the server's own SQLite, or
    a PostgreSQL server started for the run (stopped after)."""
    if name == "sqlite":
        yield None
        return
    script = ROOT / "scripts" / "postgres"
    where = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    url = subprocess.run([str(script), str(where)], check=True, capture_output=True,
                         text=True).stdout.strip()
    try:
        yield url
    finally:
        subprocess.run([str(script), str(where), "stop"], check=False)
        shutil.rmtree(where, ignore_errors=True)


def log(message: str) -> None:
    print(f"[{time.perf_counter() - _T0:6.1f}s] {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from .server import MemorySampler, VmimportServer, client

    started = time.perf_counter()
    results: dict = {
        "command": "python -m bench " + shlex.join(sys.argv[1:] if argv is None else argv),
        "machine": report.machine(), "versions": report.versions(),
        "settings": {"runs": args.runs, "sections": args.sections,
                     "disk": {"virtual_size": args.spec.virtual_size,
                              "data_size": args.spec.data_size, "fs_size": args.spec.fs_size,
                              "seed": args.spec.seed},
                     "growth_sizes": args.growth_sizes, "growth_timeout": args.growth_timeout,
                     "api_seconds": args.api_seconds, "api_tasks": args.api_tasks,
                     "api_databases": args.api_database_names,
                     "api_processes": args.api_process_list,
                     "api_scales": args.api_scale_list,
                     "server": "vmimport serve, default settings (a worker process with 2 threads; 4 for api)",
                     "poll_interval": 0.1},
    }
    cache = args.cache_dir
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="run-", dir=cache))
    try:
        t = time.perf_counter()
        base = disks.base_raw(cache, args.spec)
        log(f"base disk {base} ({base.stat().st_blocks * 512 / MiB:.0f} MiB allocated, "
            f"{args.spec.virtual_size / GiB:g} GiB virtual) ready in {time.perf_counter() - t:.1f}s")
        support: dict = {}
        if {"conversion", "growth"} & set(args.sections):
            from .conversion import probe_support, run_conversion, run_growth
            from .guest_disk import GUEST_FORMATS, guest_raw

            server = VmimportServer(work / "data", env=EQUAL_FOOTING).start()
            try:
                ec2 = client(server.endpoint)
                with MemorySampler(server.pid) as sampler:
                    log("probing formats:")
                    wanted = list(dict.fromkeys(
                        (args.format_names if "conversion" in args.sections else [])
                        + (args.growth_names if "growth" in args.sections else [])))
                    support = probe_support(server, ec2, wanted, args.spec, cache, log)
                    results["support"] = support
                    if "conversion" in args.sections:
                        log(f"conversion ({args.runs} run(s), median):")
                        results["conversion"] = []
                        if "bench" in args.disk_names:
                            results["conversion"] += run_conversion(
                                server, ec2, sampler, args.format_names, support, base,
                                args.runs, work, log, profile=args.profile_names,
                                profile_dir=args.out.parent)
                        guest_names = [n for n in args.format_names if n in GUEST_FORMATS]
                        if "guest" in args.disk_names and guest_names:
                            t = time.perf_counter()
                            guest = guest_raw(cache, args.guest_spec)
                            log(f"guest disk {guest} ({guest.stat().st_blocks * 512 / MiB:.0f}"
                                f" MiB allocated) ready in {time.perf_counter() - t:.1f}s")
                            results["conversion"] += run_conversion(
                                server, ec2, sampler, guest_names, support, guest, args.runs,
                                work, log, profile=args.profile_names,
                                profile_dir=args.out.parent, disk="guest")
                    if "growth" in args.sections:
                        log("growth:")
                        results["growth"] = run_growth(
                            server, ec2, sampler, args.growth_names, support, args.spec,
                            args.growth_sizes, args.runs, cache, work, log, args.growth_timeout)
            finally:
                server.stop()
        if "export" in args.sections:
            from .export import run_export

            log(f"export ({args.runs} run(s), median):")
            with VmimportServer(work / "export-data", env=EQUAL_FOOTING) as server, \
                    MemorySampler(server.pid) as sampler:
                results["export"] = run_export(server, client(server.endpoint), sampler, base,
                                               args.runs, work, log)
        if "api" in args.sections:
            from .api_load import run_api

            log("api:")
            big_fmt = FORMATS["vmdk-stream"] if support.get("vmdk-stream", {}).get(
                "status", "supported") == "supported" else FORMATS["raw"]
            big = disks.render(base, big_fmt)
            results["api"] = []
            moto = None
            for database in args.api_database_names:
                for processes in args.api_process_list:
                    with _database(database, work) as url:
                        env = {"VMIMPORT_API_PROCESSES": str(processes),
                               **({"VMIMPORT_DATABASE_URL": url} if url else {})}
                        server = VmimportServer(work / f"api-data-{database}-{processes}",
                                                workers=4, env=env).start()
                        try:
                            rows = run_api(server, client(server.endpoint), work, cache,
                                           args.spec, big, big_fmt.declared, args.api_tasks,
                                           args.api_seconds, args.import_calls, log,
                                           args.out.parent if "api" in args.profile_names
                                           else None, database=database, database_url=url,
                                           scales=args.api_scale_list, moto=moto)
                        finally:
                            server.stop()
                    results["api"] += rows
                    moto = moto or next(r for r in rows if r["server"] == "moto")
        if "api_abuse" in args.sections:
            from .api_abuse import abuse_server, run_api_abuse

            log("api_abuse:")
            server = abuse_server(work / "abuse-data").start()
            try:
                results["api_abuse"] = [run_api_abuse(
                    server, client(server.endpoint), cache, args.spec, args.abuse_images,
                    args.abuse_rounds, args.abuse_polls, args.abuse_connections, log)]
            finally:
                server.stop()
        if "s3" in args.sections:
            from .s3_transfer import run_s3

            log("s3:")
            results["s3"] = run_s3(work, cache, args.s3_bytes, args.runs, log)
        if "inspection" in args.sections:
            from .inspection import run_inspection

            log("inspection:")
            results["inspection"] = run_inspection(cache, base, max(args.runs, 5), log,
                                                   args.fixtures)
        if "boot" in args.sections:
            from .boot import run_boot

            log(f"boot ({args.runs} run(s), median):")
            results["boot"] = run_boot(cache, work, args.runs, log)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    rows = report.print_report(results)
    report.write_json(results, args.out)
    log(f"\nresults: {args.out}  (total {results['total_seconds']:.0f}s)")
    if args.markdown:
        write_markdown(results, rows, args.markdown)
        log(f"markdown: {args.markdown}")
    return 0


def write_markdown(results: dict, rows, path: Path) -> None:
    m, v = results["machine"], results["versions"]
    misses = report.missed(rows)
    text = f"""# Benchmarks

Latest results of `bench/` (issue 6). Every figure is measured against a baseline run in the same
invocation (qemu-img for conversion, the 4 GiB case for growth, moto's server for the API), so the
ratios hold even on a busy machine; absolute times drift with the machine's load.

Reproduce from a fresh clone with `scripts/bench` (sets up `.venv` with the `bench` extra, then
runs `python -m bench`; `scripts/bench --quick` takes ~3 minutes). These results came from:
```
{results['command']}
```
Machine: {m['cpu_model']}, {m['cores']} cores, {m['memory_bytes'] / GiB:.0f} GiB RAM, Linux
{m['kernel']}, Python {m['python']}, load average {m['loadavg_at_start'][0]:.2f} at the start
(shared with other work). Date: {m['date']}. Total time {results['total_seconds']:.0f} s.
Versions: vmimport {v['vmimport']} ({v['vmimport_commit']}), {v['qemu_img']}, moto {v['moto']},
{v['wrk']}.

{report.markdown_table(rows)}

Targets missed: {len(misses) or 'none'}
{chr(10).join('- ' + line for line in misses)}

The full figures (every run, CPU seconds, image sizes) are in the JSON that the command writes
(`bench/results/latest.json`). See `bench/README.md` for what each section does.
"""
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
