"""API load: signed Describe* requests under 32 concurrent connections (wrk with presigned GET
URLs — a presigned SigV4 URL stays valid until it expires, so wrk can replay it), against moto's
server answering DescribeImages the same way; and ImportImage latency while imports convert."""

from __future__ import annotations

import http.client
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from . import disks
from .conversion import BUCKET, _wait_gone
from .disks import MiB
from .server import VmimportServer, proc_kib, client, cpu_seconds, moto_server

WRK = shutil.which("wrk")
CONNECTIONS = 32


def presign(ec2, operation: str, params: dict) -> str:
    return ec2.generate_presigned_url(operation, Params=params, ExpiresIn=3600,
                                      HttpMethod="GET")


def check_url(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read()


def load(url: str, seconds: float, connections: int = CONNECTIONS, pid: int | None = None) -> dict:
    """req/s and latency percentiles of GET ``url`` under ``connections`` connections; with
    ``pid``, also the CPU that server process tree spent per request (the figure a loaded
    machine moves least)."""
    cpu0 = cpu_seconds(pid) if pid else 0.0
    result = _wrk(url, seconds, connections) if WRK else _python_load(url, seconds, connections)
    if pid and result["requests"]:
        result["cpu_ms_per_request"] = round((cpu_seconds(pid) - cpu0) * 1000
                                             / result["requests"], 2)
    return result


def _wrk(url: str, seconds: float, connections: int) -> dict:
    threads = max(1, min(2, connections))
    out = subprocess.run([WRK, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
                          "--latency", "--timeout", "10s", url],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    pct = {p: _ms(v) for p, v in re.findall(r"^\s+(\d+)%\s+([\d.]+\w+)\s*$", out, re.M)}
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: (.*)", out)
    total = int(re.search(r"(\d+) requests in", out).group(1))
    return {"tool": "wrk", "requests": total, "rps": round(rps, 1), "p50_ms": pct.get("50"),
            "p99_ms": pct.get("99"), "non_2xx": int(errors.group(1)) if errors else 0,
            "socket_errors": sock.group(1).strip() if sock else "", "connections": connections,
            "seconds": seconds}


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(\w+)", text).groups()
    return round(float(value) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[unit], 3)


def _python_load(url: str, seconds: float, connections: int) -> dict:
    """A stand-in for wrk when it is not installed (threads with keep-alive connections; on a
    small machine it loads the client as much as the server — use wrk for real numbers)."""
    parts = urlsplit(url)
    target = parts.path + ("?" + parts.query if parts.query else "")
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def worker() -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        mine, bad = [], 0
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            try:
                conn.request("GET", target)
                resp = conn.getresponse()
                resp.read()
                bad += resp.status >= 300
            except (OSError, http.client.HTTPException):
                bad += 1
                conn.close()
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
            mine.append(time.perf_counter() - t0)
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    return {"tool": "python-threads", "requests": len(latencies),
            "rps": round(len(latencies) / elapsed, 1),
            "p50_ms": round(percentile(latencies, 50) * 1000, 3),
            "p99_ms": round(percentile(latencies, 99) * 1000, 3), "non_2xx": errors[0],
            "socket_errors": "", "connections": connections, "seconds": seconds}


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


# ------------------------------------------------------------------ the section


def run_api(server: VmimportServer, ec2, work: Path, cache: Path, spec: disks.DiskSpec,
            big_image: Path | None, big_declared: str, tasks: int, seconds: float,
            import_calls: int, log, profile_dir: Path | None = None, *,
            database: str = "sqlite", database_url: str | None = None,
            scales: list[int] = (), moto: dict | None = None) -> list[dict]:
    """One database's rows: the Describe* calls on ``tasks`` imported tasks and AMIs; the
    paged listings once the database holds each of ``scales`` tasks and images (copied rows:
    ``api_rows``) and the API process's peak memory then; ImportImage while imports convert.
    ``moto``: the baseline row measured already (by another database's run), else measured
    here. ``profile_dir``: also run each Describe* load once more under py-spy."""
    rows: list[dict] = []
    processes = len(server.api_pids())
    database_name, database = database, f"{database}, {processes} API " \
                                         f"process{'es' if processes > 1 else ''}"  # for the log
    tiny = disks.base_raw(cache / "api", disks.DiskSpec(
        virtual_size=40 * MiB, data_size=1 * MiB, fs_size=8 * MiB, seed=spec.seed))
    server.put(BUCKET, "api/tiny.raw", tiny)

    # 1. the database: `tasks` ImportImage tasks (each registers an AMI)
    t0 = time.perf_counter()
    ids = [ec2.import_image(Description=f"api load {i}", DiskContainers=[{
        "Format": "raw", "UserBucket": {"S3Bucket": BUCKET, "S3Key": "api/tiny.raw"}}])
        ["ImportTaskId"] for i in range(tasks)]
    for task_id in ids:
        _wait_gone(ec2, task_id, timeout=600)
    described = ec2.describe_import_image_tasks(ImportTaskIds=ids)["ImportImageTasks"]
    images = [t["ImageId"] for t in described if t.get("ImageId")]
    log(f"  [{database}] {len(ids)} import tasks ({len(images)} AMIs) created in "
        f"{time.perf_counter() - t0:.1f}s")
    some = images[:5]
    snapshots = [d["SnapshotId"] for t in described if t.get("ImageId")
                 for d in t.get("SnapshotDetails", []) if d.get("SnapshotId")][:5]
    if some:
        ec2.create_tags(Resources=some, Tags=[{"Key": "bench", "Value": "api"}])

    # 2. moto's DescribeImages (the baseline), once for every database
    if moto is None:
        moto = _moto_baseline(work, seconds, log)
        rows.append(moto)
    base_rps = moto.get("rps") if moto.get("status") == "measured" else None

    # 3. vmimport under the same load
    ebs = client(server.endpoint, "ebs")
    cases = [("DescribeImages", ec2, "describe_images", {"ImageIds": some} if some else {}),
             ("DescribeImportImageTasks", ec2, "describe_import_image_tasks", {}),
             ("DescribeSnapshots", ec2, "describe_snapshots",
              {"SnapshotIds": snapshots} if snapshots else {"OwnerIds": ["self"]}),
             ("DescribeTags", ec2, "describe_tags", {})]
    if snapshots:
        listed = ebs.list_snapshot_blocks(SnapshotId=snapshots[0])
        cases.append(("ListSnapshotBlocks", ebs, "list_snapshot_blocks",
                      {"SnapshotId": snapshots[0]}))
        if listed["Blocks"]:
            block = listed["Blocks"][0]
            cases.append(("GetSnapshotBlock", ebs, "get_snapshot_block", {
                "SnapshotId": snapshots[0], "BlockIndex": block["BlockIndex"],
                "BlockToken": block["BlockToken"]}))
    measured = [_measure(server, case, seconds, base_rps, database, log) for case in cases]
    rows += measured

    if profile_dir is not None:
        from .profile import PySpy, log_summary

        for row, (action, caller, operation, params) in zip(measured, cases):
            url = presign(caller, operation, params)
            name = re.sub(r"[^A-Za-z0-9]+", "-", f"{action}-{database}").strip("-")
            with PySpy(server.pid, profile_dir / f"profile-api-{name}.txt") as spy:
                load(url, seconds)
            row["profile"] = spy.summary()
            log(f"  {action} under load, profiled:")
            log_summary(row["profile"], log)

    # 4. many tasks and images: the pages a client walks, and the API process's memory
    if scales:
        from . import api_rows

        url = database_url or f"sqlite:///{server.data_dir / 'vmimport.db'}"
        for scale in scales:
            t0 = time.perf_counter()
            counts = api_rows.grow(url, scale)
            log(f"  [{database}] database grown to {counts['tasks']} tasks and "
                f"{counts['images']} images in {time.perf_counter() - t0:.1f}s")
            for action, operation, params in (
                    ("DescribeImages", "describe_images", {"Owners": ["self"], "MaxResults": 100}),
                    ("DescribeImportImageTasks", "describe_import_image_tasks",
                     {"MaxResults": 100})):
                rows.append(_measure(server, (f"{action} (page of 100 of {scale})", ec2,
                                              operation, params), seconds, base_rps, database,
                                     log, scale=scale))
            # the peak RSS of the largest API process
            peak = max(proc_kib(p, "status", "VmHWM:") for p in server.api_pids()) * 1024
            rows.append({"section": "api", "server": "vmimport", "database": database,
                         "action": f"API process memory ({scale} tasks and images)",
                         "api_processes": len(server.api_pids()),
                         "status": "measured", "scale": scale, "peak_rss": peak,
                         "memory_pass": peak <= 150 * MiB})
            log(f"  [{database}] API process peak RSS {peak / MiB:.0f} MiB with {scale} tasks "
                f"and images (target <= 150 MiB)")

    # 5. ImportImage latency while 4 big imports convert
    if big_image is not None and import_calls > 0:
        latency, polled = _import_latency(server, ec2, big_image, big_declared, import_calls,
                                          log, cases[0], seconds, base_rps, database)
        rows += [{**latency, "database": database}, polled]
    server.drop(BUCKET, "api/tiny.raw")
    for row in rows:
        if row["server"] == "vmimport":
            row.update(database=database_name, api_processes=processes)
    return rows


def _measure(server: VmimportServer, case: tuple, seconds: float, base_rps: float | None,
             database: str, log, **extra) -> dict:
    """One presigned GET replayed under 32 connections: its row, with the ratio to moto."""
    action, caller, operation, params = case
    url = presign(caller, operation, params)
    body = check_url(url)
    result = load(url, seconds, pid=server.pid)
    row = {"section": "api", "server": "vmimport", "database": database, "action": action,
           **result, **extra, "items_in_response": body.count(b"<item>"),
           "params": {k: (len(v) if isinstance(v, list) else v) for k, v in params.items()
                      if k != "BlockToken"},
           "status": "measured"}
    if base_rps:
        row["baseline_rps"] = base_rps
        row["ratio"] = round(row["rps"] / base_rps, 2)
        row["rps_pass"] = row["ratio"] >= 20
    row["p99_pass"] = row["p99_ms"] is not None and row["p99_ms"] < 50
    log(f"  vmimport [{database}] {action:40s} {row['rps']:8.1f} req/s  p99 {row['p99_ms']} ms  "
        f"{row.get('cpu_ms_per_request')} CPU-ms/req  "
        + (f"x{row['ratio']} of moto" if base_rps else "(no moto baseline)")
        + (f"  non-2xx {row['non_2xx']}" if row["non_2xx"] else ""))
    return row


def _moto_baseline(work: Path, seconds: float, log) -> dict | None:
    try:
        import moto  # noqa: F401
    except ImportError:
        log("  moto is not installed (pip install -e '.[bench]'): no baseline")
        return {"section": "api", "server": "moto", "action": "DescribeImages",
                "status": "not available", "message": "moto is not installed"}
    from importlib.metadata import version

    with moto_server(work) as peer:
        ec2 = client(peer.endpoint)
        ids = [ec2.register_image(Name=f"bench-{i}", RootDeviceName="/dev/sda1",
                                  Architecture="x86_64", VirtualizationType="hvm",
                                  BlockDeviceMappings=[{"DeviceName": "/dev/sda1",
                                                        "Ebs": {"VolumeSize": 8}}])["ImageId"]
               for i in range(5)]
        url = presign(ec2, "describe_images", {"ImageIds": ids})
        body = check_url(url)
        result = load(url, seconds, pid=peer.pid)
    row = {"section": "api", "server": "moto", "moto_version": version("moto"),
           "action": "DescribeImages", **result, "items_in_response": body.count(b"<item>"),
           "params": {"ImageIds": len(ids)}, "status": "measured"}
    log(f"  moto     DescribeImages            {row['rps']:8.1f} req/s  p99 {row['p99_ms']} ms  "
        f"{row.get('cpu_ms_per_request')} CPU-ms/req")
    return row


def _import_latency(server: VmimportServer, ec2, image: Path, declared: str, calls: int,
                    log, describe: tuple, seconds: float, base_rps: float | None,
                    database: str) -> tuple[dict, dict]:
    """Sequential ImportImage calls (tiny disk) timed while 4 big imports are converting; then
    the ``describe`` case (DescribeImages) under load while they still convert."""
    big = []
    for i in range(4):
        key = f"api/big{i}{image.suffix}"
        server.put(BUCKET, key, image)
        big.append(ec2.import_image(Description=f"big {i}", DiskContainers=[{
            "Format": declared, "UserBucket": {"S3Bucket": BUCKET, "S3Key": key}}])
            ["ImportTaskId"])

    def states() -> tuple[int, int]:
        """(converting, still active) among the big imports."""
        tasks = ec2.describe_import_image_tasks(ImportTaskIds=big)["ImportImageTasks"]
        return (sum(t["Status"] == "active" and t.get("StatusMessage") == "converting"
                    for t in tasks), sum(t["Status"] == "active" for t in tasks))

    def converting() -> int:
        return states()[0]

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now_converting, active = states()
        if now_converting >= min(4, server.workers) or active == 0:
            break
        time.sleep(0.1)
    at_start = converting()
    latencies, small = [], []
    for i in range(calls):
        t0 = time.perf_counter()
        small.append(ec2.import_image(Description=f"during load {i}", DiskContainers=[{
            "Format": "raw", "UserBucket": {"S3Bucket": BUCKET, "S3Key": "api/tiny.raw"}}])
            ["ImportTaskId"])
        latencies.append(time.perf_counter() - t0)
    at_end = converting()
    action, caller, operation, params = describe
    # short: 4 imports of the bench disk are done within ~10 s of their start
    polled = _measure(server, (f"{action} (4 imports converting)", caller, operation, params),
                      min(seconds, 3.0), base_rps, database, log,
                      converting_at_start=converting())
    polled["converting_at_end"] = converting()
    for task_id in big + small:
        try:
            ec2.cancel_import_task(ImportTaskId=task_id)
        except Exception:  # already finished
            pass
    for task_id in big + small:
        _wait_gone(ec2, task_id)
    for i in range(4):
        server.drop(BUCKET, f"api/big{i}{image.suffix}")
    server.clear_blocks()
    p99 = percentile(latencies, 99) * 1000
    row = {"section": "api", "server": "vmimport", "action": "ImportImage (4 imports converting)",
           "status": "measured", "calls": calls, "p50_ms": round(percentile(latencies, 50) * 1000, 2),
           "p99_ms": round(p99, 2), "max_ms": round(max(latencies) * 1000, 2),
           "converting_at_start": at_start, "converting_at_end": at_end,
           "workers": server.workers, "p99_pass": p99 < 100}
    log(f"  vmimport ImportImage under load      p50 {row['p50_ms']} ms  p99 {row['p99_ms']} ms "
        f"({calls} calls; {at_start} -> {at_end} imports converting)")
    log(f"  ({polled['converting_at_start']} -> {polled['converting_at_end']} imports converting "
        f"during the {action} load)")
    return row, polled
