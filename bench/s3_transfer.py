"""S3 through vmimport's own endpoint beside a real S3 server on this machine (SeaweedFS, the
one the tests use): the AWS CLI's ``aws s3 cp`` of the same incompressible file up and down,
also through a vmimport whose buckets are kept in that SeaweedFS (issue 15),
with its default multipart settings, the two servers taking turns run by run (after an untimed
run each), so both share the machine's slow spells. vmimport's peak PSS is sampled during its
transfers (issue 14: bounded memory whatever the object's size)."""

from __future__ import annotations

import contextlib
import filecmp
import os
import statistics
import subprocess
import time
from pathlib import Path

from .disks import MiB
from .server import ACCESS_KEY, BIN, REGION, SECRET_KEY, MemorySampler, VmimportServer

BUCKET = "bench-s3"
TARGET = 1.0  # at least as fast as SeaweedFS, both ways
RSS_LIMIT = 256 * MiB


def payload(cache: Path, size: int) -> Path:
    """``size`` random bytes (no server may gain by compressing or deduplicating), cached."""
    path = cache / f"s3-payload-{size // MiB}M.bin"
    if not path.exists() or path.stat().st_size != size:
        partial = path.with_suffix(".partial")
        with open(partial, "wb") as f:
            for _ in range(size // MiB):
                f.write(os.urandom(MiB))
        partial.rename(path)
    return path


def _aws(endpoint: str, access_key: str, secret_key: str, *args: str) -> float:
    env = {**os.environ, "AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key,
           "AWS_DEFAULT_REGION": REGION, "AWS_CONFIG_FILE": "/dev/null",
           "AWS_SHARED_CREDENTIALS_FILE": "/dev/null", "AWS_MAX_ATTEMPTS": "1"}
    env.pop("AWS_PROFILE", None)
    started = time.perf_counter()
    subprocess.run([str(BIN / "aws"), "--endpoint-url", endpoint, *args], env=env, check=True,
                   capture_output=True, timeout=1800)
    return time.perf_counter() - started


def run_s3(work: Path, cache: Path, size: int, runs: int, log) -> list[dict]:
    """Rows for vmimport's local buckets against SeaweedFS, and for vmimport's buckets kept in
    that SeaweedFS (``blocks_url`` on it: every byte passes through vmimport to the store)."""
    from tests.s3server import S3Server  # the tests' SeaweedFS, started the same way

    source = payload(cache, size)
    weed = S3Server(work / "s3-weed").start()
    weed.client().create_bucket(Bucket="vmimport-blocks")
    vmimport = VmimportServer(work / "s3-data", workers=0).start()
    shared = VmimportServer(work / "s3-shared-data", workers=0,
                            env=weed.blocks_env("s3://vmimport-blocks/bench/")).start()
    servers = {"vmimport": (vmimport.endpoint, ACCESS_KEY, SECRET_KEY),
               "shared": (shared.endpoint, ACCESS_KEY, SECRET_KEY),
               "seaweedfs": (weed.endpoint_url, weed.access_key, weed.secret_key)}
    samplers = {"vmimport": MemorySampler(vmimport.pid), "shared": MemorySampler(shared.pid)}
    rows = []
    try:
        for endpoint, key, secret in servers.values():
            _aws(endpoint, key, secret, "s3", "mb", f"s3://{BUCKET}")
        with contextlib.ExitStack() as sampling:
            for sampler in samplers.values():
                sampling.enter_context(sampler)
            _run_directions(work, source, size, runs, servers, samplers, rows, log)
    finally:
        shared.stop()
        vmimport.stop()
        weed.stop()
    return rows


def _run_directions(work: Path, source: Path, size: int, runs: int, servers: dict, samplers: dict,
                    rows: list, log) -> None:
    """Each direction through every server in turn; a row per vmimport server to ``rows``."""
    for direction in ("upload", "download"):
        times: dict[str, list[float]] = {name: [] for name in servers}
        peaks = dict.fromkeys(samplers, 0)
        for run in range(runs + 1):  # run 0 warms each server up, untimed
            order = list(servers) if run % 2 == 0 else list(reversed(servers))
            for name in order:
                endpoint, key, secret = servers[name]
                if name in samplers:
                    samplers[name].reset()
                args = ([str(source), f"s3://{BUCKET}/payload"] if direction == "upload"
                        else [f"s3://{BUCKET}/payload", str(work / "s3-download")])
                seconds = _aws(endpoint, key, secret, "s3", "cp", *args)
                if name in samplers:
                    peaks[name] = max(peaks[name], samplers[name].peak)
                if run:
                    times[name].append(seconds)
                if direction == "download":
                    # a fast wrong answer must not win: the bytes come back unchanged
                    if not run and not filecmp.cmp(source, work / "s3-download",
                                                   shallow=False):
                        raise RuntimeError(f"{name} returned other bytes than uploaded")
                    (work / "s3-download").unlink()
        theirs = statistics.median(times["seaweedfs"])
        for name, label, target in (("vmimport", "", TARGET),
                                    ("shared", " (buckets in SeaweedFS)", None)):
            ours = statistics.median(times[name])
            row = {"section": "s3", "direction": direction + label, "size": size,
                   "runs": runs, "vmimport_seconds": times[name],
                   "seaweedfs_seconds": times["seaweedfs"], "vmimport_median": ours,
                   "seaweedfs_median": theirs, "ratio": theirs / ours, "target": target,
                   "vmimport_peak_pss": peaks[name]}
            # Through to the store every byte costs both servers: no speed target there,
            # memory stays bounded all the same.
            row["pass_"] = (target is None or row["ratio"] >= target) and \
                peaks[name] <= RSS_LIMIT
            log(f"  aws s3 cp {direction}{label} {size // MiB} MiB: vmimport {ours:.2f} s "
                f"(PSS {peaks[name] / MiB:.0f} MiB), SeaweedFS {theirs:.2f} s: "
                f"x{row['ratio']:.2f}")
            rows.append(row)
