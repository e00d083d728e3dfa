"""The benchmark's code runs end to end on tiny inputs (the real benchmark is `scripts/bench`;
it is not part of the suite). Needs no wrk and no moto: the load test then falls back to a
Python load generator and reports the moto baseline as not available."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_bench_runs_on_a_tiny_input(tmp_path):
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--tiny", "--formats", "raw,vmdk-stream",
         "--only", "conversion,growth,api,inspection",
         "--growth-formats", "raw", "--api-databases", "sqlite,postgresql", "--api-scales", "20",
         "--cache-dir", str(tmp_path / "cache"), "--out", str(out),
         "--markdown", str(tmp_path / "BENCHMARKS.md")],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["machine"]["cores"] >= 1 and results["machine"]["cpu_model"]
    conversion = {r["format"]: r for r in results["conversion"] if r["disk"] == "bench"}
    # The realistic guest disk (host files in ext4, logs, zero runs, 4 KiB writes) is measured
    # for the compressed formats only.
    guest = {r["format"]: r for r in results["conversion"] if r["disk"] == "guest"}
    assert list(guest) == ["vmdk-stream"], results["conversion"]
    assert guest["vmdk-stream"]["status"] == "measured", guest
    assert guest["vmdk-stream"]["speedup"] > 0
    for name in ("raw", "vmdk-stream"):
        assert conversion[name]["status"] == "measured", conversion[name]
        assert conversion[name]["speedup"] > 0 and conversion[name]["vmimport_peak_rss"] > 0
        # Where the time goes: the worker's own conversion time (from its log) is part of the
        # import's, and both tools' CPU seconds are counted.
        row = conversion[name]
        assert 0 < row["vmimport_store_median"] < row["vmimport_median"], row
        assert row["qemu_cpu_median"] > 0 and row["vmimport_cpu_median"] > 0, row
    growth = [r for r in results["growth"] if r.get("status") == "measured"]
    assert [r["virtual_size"] for r in growth] == [64 << 20, 256 << 20, 1 << 30]
    for database in ("sqlite", "postgresql"):  # every row on both databases
        api = {r["action"]: r for r in results["api"]
               if r["server"] == "vmimport" and r["database"] == database}
        for action in ("DescribeImages", "DescribeImportImageTasks", "DescribeSnapshots",
                       "DescribeTags", "ListSnapshotBlocks", "GetSnapshotBlock",
                       "DescribeImages (page of 100 of 20)",
                       "DescribeImportImageTasks (page of 100 of 20)"):
            assert api[action]["rps"] > 0 and api[action]["non_2xx"] == 0, (database, action)
        assert api["DescribeImportImageTasks"]["cpu_ms_per_request"] > 0  # the server's own
        assert api["DescribeImportImageTasks"]["items_in_response"] >= 5
        assert api["DescribeTags"]["items_in_response"] == 5  # the 5 tagged AMIs, no more
        # The grown database really holds the copies: a page lists 20 tasks, not the 5 made.
        assert api["DescribeImportImageTasks (page of 100 of 20)"]["items_in_response"] >= 20
        assert api["API process memory (20 tasks and images)"]["peak_rss"] > 0
        assert api["ImportImage (4 imports converting)"]["calls"] == 5
        assert api["DescribeImages (4 imports converting)"]["rps"] > 0
        # the server's default: one API process per core (bench/server.py finds them)
        assert api["DescribeImages"]["api_processes"] == min(results["machine"]["cores"], 8)
    assert "| api | GetSnapshotBlock [postgresql, " in (tmp_path / "BENCHMARKS.md").read_text()
    assert results["inspection"]
    markdown = (tmp_path / "BENCHMARKS.md").read_text()
    assert "| conversion | raw |" in markdown and "| conversion | vmdk-stream [guest] |" in markdown
    assert "targets missed" in proc.stdout


def test_api_abuse_runs_on_a_tiny_input(tmp_path):
    """The abuse section measures the client alone and under abuse, and the abuser's requests
    really reached the server and got the answers the limits give."""
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--tiny", "--only", "api_abuse",
         "--cache-dir", str(tmp_path / "cache"), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    [row] = json.loads(out.read_text())["api_abuse"]
    assert row["images"] == 2 and row["rounds"] == 1 and row["polls"] == 20
    for key in ("quiet_p50_ms", "quiet_p99_ms", "abused_p50_ms", "abused_p99_ms", "p99_ratio"):
        assert row[key] > 0, row
    assert row["p99_pass"] == (row["abused_p99_ms"] < 50)
    sent = row["abuser_requests"]
    assert sent.get("200 wildcard values, 4 filters: 200", 0) > 0, sent
    assert sent.get("20000 values (refused): 400", 0) > 0, sent
    assert sent.get("bad signature: 403", 0) > 0, sent
    assert "api_abuse  DescribeImages, another key abusing" in proc.stdout


def test_export_runs_on_a_tiny_input(tmp_path):
    """Each format is exported through the API and timed against qemu-img, and only after
    `qemu-img compare` found the export the same disk as the raw it was imported from."""
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--tiny", "--only", "export",
         "--cache-dir", str(tmp_path / "cache"), "--out", str(out),
         "--markdown", str(tmp_path / "BENCHMARKS.md")],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = {r["format"]: r for r in json.loads(out.read_text())["export"]}
    assert sorted(rows) == ["RAW", "VHD", "VMDK"]
    for name, row in rows.items():
        assert row["status"] == "measured" and row["identical"], row
        assert row["speedup"] > 0 and row["vmimport_peak_rss"] > 0, row
        assert 0 < row["vmimport_write_median"] < row["vmimport_median"], row
        assert row["vmimport_bytes"] > 0 and row["qemu_bytes"] > 0, row
    assert rows["RAW"]["vmimport_bytes"] == rows["RAW"]["qemu_bytes"] == 64 << 20
    assert rows["VMDK"]["vmimport_bytes"] < 64 << 20  # deflated
    assert "| export | VMDK |" in (tmp_path / "BENCHMARKS.md").read_text()


def test_floor_runs_on_a_tiny_input(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bench.floor", "--tiny", "--runs", "1",
                           "--cache-dir", str(tmp_path / "cache")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in ("qemu-img", "store", "floor"):
        assert f"  {name} " in proc.stdout, proc.stdout
    assert not list((tmp_path / "cache" / "floor-work").iterdir())  # every output deleted


def test_the_floor_loop_writes_every_byte(tmp_path):
    """The floor is only a floor if it does the work: its output -- a file per thread, each
    holding the stretches its thread wrote at their offsets -- adds up to the image, byte for
    byte (data in several windows, explicit zeros, holes)."""
    from bench.floor import WINDOW, floor_copy

    image, out = tmp_path / "disk.raw", tmp_path / "out"
    data = bytearray(3 * WINDOW)
    data[100:WINDOW + 5000] = os.urandom(WINDOW + 4900)
    data[2 * WINDOW + 4096:2 * WINDOW + 8192] = os.urandom(4096)
    with open(image, "wb") as f:
        f.write(data[:2 * WINDOW])  # written zeros up to here, then a hole
        f.seek(2 * WINDOW + 4096)
        f.write(data[2 * WINDOW + 4096:2 * WINDOW + 8192])
        f.truncate(len(data))
    floor_copy(image, out)
    parts = [path.read_bytes().ljust(len(data), b"\0") for path in out.iterdir()]
    assert 1 <= len(parts) <= 2
    combined = 0  # the stretches never overlap: OR-ing the files puts each in its place
    for part in parts:
        combined |= int.from_bytes(part, "big")
    assert combined.to_bytes(len(data), "big") == bytes(data)


def test_the_inflate_floor_writes_every_byte_of_a_stream_vmdk(tmp_path):
    """The compressed formats' floor inflates and writes the whole guest: on the tiny guest
    disk's stream VMDK (rendered by qemu-img), its files add up to the raw disk."""
    from bench import disks, guest_disk
    from bench.floor import inflate_floor_copy

    raw = guest_disk.guest_raw(tmp_path / "cache", guest_disk.TINY_GUEST)
    vmdk = disks.render(raw, disks.FORMATS["vmdk-stream"])
    out = tmp_path / "out"
    inflate_floor_copy(vmdk, out, "vmdk")
    size = raw.stat().st_size
    combined = 0
    for path in out.iterdir():
        combined |= int.from_bytes(path.read_bytes().ljust(size, b"\0"), "big")
    assert combined.to_bytes(size, "big") == raw.read_bytes()


def test_floor_runs_for_a_compressed_format(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bench.floor", "--tiny", "--runs", "1",
                           "--format", "vmdk-stream", "--disk", "guest",
                           "--cache-dir", str(tmp_path / "cache")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in ("qemu-img", "store", "floor"):
        assert f"  {name} " in proc.stdout, proc.stdout
    assert "distance to the floor" in proc.stdout


def test_s3_runs_on_a_tiny_input(tmp_path):
    """The s3 section copies the same file up and down through vmimport (its buckets local,
    and kept in the SeaweedFS it compares with) and SeaweedFS, the downloads compared byte for
    byte with the upload, and reports both directions for both."""
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--tiny", "--only", "s3",
         "--cache-dir", str(tmp_path / "cache"), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads(out.read_text())["s3"]
    assert [r["direction"] for r in rows] == [
        "upload", "upload (buckets in SeaweedFS)", "download", "download (buckets in SeaweedFS)"]
    for row in rows:
        assert len(row["vmimport_seconds"]) == len(row["seaweedfs_seconds"]) == 1
        assert row["ratio"] > 0 and row["vmimport_peak_pss"] > 0
    assert "aws s3 cp upload 8 MiB" in proc.stdout


@pytest.mark.slow  # a whole scripts/cluster: PostgreSQL, SeaweedFS, 2 APIs, 3 workers
def test_cluster_bench_runs_on_a_tiny_input(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "bench.cluster", "--imports", "2", "--data-mib", "8",
         "--reads", "5"], cwd=ROOT, capture_output=True, text=True, timeout=900,
        env={**os.environ, "VMIMPORT_BENCH_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["concurrent"]["imports"] == 2 and result["concurrent"]["wall_seconds"] > 0
    assert result["alone_seconds"] > 0 and result["qemu_img_seconds"] > 0
    assert result["get_snapshot_block"]["reads"] == 5
    assert "2 imports at once over 3 workers: all completed" in proc.stdout
