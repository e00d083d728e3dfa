"""A well-behaved client's DescribeImages latency while another key sends the worst requests
the limits allow (issue 16): 200 filter values of 255 wildcard-laden characters, 1,000 ids,
100 signed headers, the 20,000-value request of the issue (now refused), bad signatures.

The well-behaved client replays a presigned DescribeImages GET on one keep-alive connection,
a poll every 10 ms, in rounds: a quiet phase, then the same number of polls while the abuser
runs, so both conditions share the machine's slow spells. The abuser is a separate process
(its signing and sending must not take the interpreter lock from the client being timed) of
``connections`` threads replaying requests signed once by a read-only key of the same account
(its filters scan the same images)."""

from __future__ import annotations

import http.client
import multiprocessing
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from . import disks
from .api_load import percentile, presign
from .conversion import BUCKET, _wait_gone
from .disks import MiB
from .server import ACCESS_KEY, REGION, SECRET_KEY, VmimportServer

ABUSER_KEY, ABUSER_SECRET = "ABUSER", "abusersecret"
CREDENTIALS = (f'[{{"access_key":"{ACCESS_KEY}","secret_key":"{SECRET_KEY}",'
               f'"account_id":"000000000000"}},{{"access_key":"{ABUSER_KEY}",'
               f'"secret_key":"{ABUSER_SECRET}","account_id":"000000000000",'
               '"actions":["Describe*"]}]')
TARGET_P99_MS = 50


def abuse_server(data_dir: Path) -> VmimportServer:
    return VmimportServer(data_dir, env={"VMIMPORT_CREDENTIALS": CREDENTIALS})


def _wild(n: int) -> str:
    """255 characters, 126 '*': the most automaton states a value may hold; never matches."""
    return (f"{n:03d}" + "*a" * 126)[:254] + "z"


def _filters(prefix: str, filters: list[tuple[str, list[str]]]) -> dict:
    out = {}
    for i, (name, values) in enumerate(filters, 1):
        out[f"{prefix}.{i}.Name"] = name
        out.update({f"{prefix}.{i}.Value.{j}": v for j, v in enumerate(values, 1)})
    return out


def abusive_requests() -> dict[str, tuple[dict, dict, str]]:
    """name -> (form fields, extra headers, secret to sign with)."""
    wild = [_wild(n) for n in range(200)]
    four = [("name", wild[:50]), ("description", wild[50:100]), ("tag:team", wild[100:150]),
            ("block-device-mapping.snapshot-id", wild[150:])]
    images = {"Action": "DescribeImages", "Version": "2016-11-15"}
    tasks = {"Action": "DescribeImportImageTasks", "Version": "2016-11-15"}
    return {
        "200 wildcard values, 4 filters": ({**images, **_filters("Filter", four)}, {},
                                           ABUSER_SECRET),
        "200 task-state values": ({**tasks, **_filters("Filters", [("task-state", wild)])}, {},
                                  ABUSER_SECRET),
        "1000 ImageIds": ({**images, **{f"ImageId.{i}": f"ami-{i:017x}" for i in range(1, 1001)}},
                          {}, ABUSER_SECRET),
        "100 signed headers": (images, {f"x-amz-meta-h{i}": "v" * 200 for i in range(100)},
                               ABUSER_SECRET),
        "20000 values (refused)": ({**images, **_filters("Filter", [("name", [
            f"n{i}" for i in range(20000)])])}, {}, ABUSER_SECRET),
        "bad signature": ({**images, **_filters("Filter", four)}, {}, "wrong" + ABUSER_SECRET),
    }


def _sign(endpoint: str, fields: dict, headers: dict, secret: str) -> tuple[bytes, dict]:
    request = AWSRequest(method="POST", url=endpoint + "/", data=urlencode(fields).encode(),
                         headers={"Content-Type": "application/x-www-form-urlencoded; "
                                  "charset=utf-8", **headers})
    SigV4Auth(Credentials(ABUSER_KEY, secret), "ec2", REGION).add_auth(request)
    prepared = request.prepare()
    return prepared.body, dict(prepared.headers)


def _abuser(endpoint: str, connections: int, go, done, results) -> None:
    """The abuser process: requests signed once (valid for 15 minutes), replayed by
    ``connections`` threads whenever ``go`` is set, until ``done``."""
    signed = [(name, *_sign(endpoint, *spec)) for name, spec in abusive_requests().items()]
    host, port = urlsplit(endpoint).hostname, urlsplit(endpoint).port
    counts: Counter = Counter()
    lock = threading.Lock()

    def worker(offset: int) -> None:
        conn, mine, n = http.client.HTTPConnection(host, port, timeout=60), Counter(), offset
        while not done.is_set():
            if not go.wait(0.1):
                continue
            name, body, headers = signed[n % len(signed)]
            n += 1
            try:
                conn.request("POST", "/", body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                mine[f"{name}: {response.status}"] += 1
            except (OSError, http.client.HTTPException) as exc:
                mine[f"{name}: {type(exc).__name__}"] += 1
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=60)
        with lock:
            counts.update(mine)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results.put(dict(counts))


def _poll(url: str, count: int, gap: float) -> list[float]:
    parts = urlsplit(url)
    target = parts.path + "?" + parts.query
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    latencies = []
    try:
        for _ in range(count):
            t0 = time.perf_counter()
            conn.request("GET", target)
            response = conn.getresponse()
            response.read()
            latencies.append(time.perf_counter() - t0)
            if response.status != 200:
                raise RuntimeError(f"the well-behaved DescribeImages got {response.status}")
            time.sleep(gap)
    finally:
        conn.close()
    return latencies


def _ms(values: list[float], p: float) -> float:
    return round(percentile(values, p) * 1000, 2)


def run_api_abuse(server: VmimportServer, ec2, cache: Path, spec: disks.DiskSpec, images: int,
                  rounds: int, polls: int, connections: int, log) -> dict:
    tiny = disks.base_raw(cache / "api", disks.DiskSpec(
        virtual_size=40 * MiB, data_size=1 * MiB, fs_size=8 * MiB, seed=spec.seed))
    server.put(BUCKET, "api/tiny.raw", tiny)
    ids = [ec2.import_image(Description=f"abuse bench {i}", DiskContainers=[{
        "Format": "raw", "UserBucket": {"S3Bucket": BUCKET, "S3Key": "api/tiny.raw"}}])
        ["ImportTaskId"] for i in range(images)]
    for task_id in ids:
        _wait_gone(ec2, task_id, timeout=600)
    amis = [i["ImageId"] for i in ec2.describe_images()["Images"]]
    ec2.create_tags(Resources=amis, Tags=[{"Key": "team", "Value": "bench"}])
    url = presign(ec2, "describe_images", {})
    log(f"  {len(amis)} images; the abuser: {connections} connections replaying "
        f"{len(abusive_requests())} kinds of request")

    ctx = multiprocessing.get_context("spawn")
    go, done, results = ctx.Event(), ctx.Event(), ctx.Queue()
    abuser = ctx.Process(target=_abuser, args=(server.endpoint, connections, go, done, results))
    abuser.start()
    quiet: list[float] = []
    abused: list[float] = []
    try:
        _poll(url, 10, 0.01)  # warm the connection path
        for _ in range(rounds):
            quiet += _poll(url, polls, 0.01)
            go.set()
            time.sleep(0.5)  # the abuser's requests are in flight
            abused += _poll(url, polls, 0.01)
            go.clear()
            time.sleep(0.5)  # and finished
    finally:
        done.set()
        counts = results.get(timeout=120)
        abuser.join(timeout=30)
    server.drop(BUCKET, "api/tiny.raw")
    row = {"section": "api_abuse", "action": "DescribeImages while another key abuses",
           "status": "measured", "images": len(amis), "rounds": rounds, "polls": polls,
           "abuser_connections": connections,
           "quiet_p50_ms": _ms(quiet, 50), "quiet_p99_ms": _ms(quiet, 99),
           "abused_p50_ms": _ms(abused, 50), "abused_p99_ms": _ms(abused, 99),
           "abused_max_ms": round(max(abused) * 1000, 2),
           "abuser_requests": dict(sorted(counts.items())),
           "target_p99_ms": TARGET_P99_MS}
    row["p99_ratio"] = round(row["abused_p99_ms"] / row["quiet_p99_ms"], 2)
    row["p99_pass"] = row["abused_p99_ms"] < TARGET_P99_MS
    log(f"  DescribeImages alone:        p50 {row['quiet_p50_ms']} ms  p99 "
        f"{row['quiet_p99_ms']} ms  ({rounds} x {polls} polls)")
    log(f"  DescribeImages under abuse:  p50 {row['abused_p50_ms']} ms  p99 "
        f"{row['abused_p99_ms']} ms  (x{row['p99_ratio']}; max {row['abused_max_ms']} ms)")
    for kind, n in row["abuser_requests"].items():
        log(f"    abuser {kind}: {n}")
    return row
