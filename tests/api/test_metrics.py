"""GET /metrics (Prometheus text format) on a live server: requests by service, action and
status with latency histograms, tasks by state, bytes imported and stored — to loopback
clients only by default, to no one outside metrics_allowed_networks; and JSON logs
(log_format = json) that never hold a secret."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from botocore.exceptions import ClientError
from prometheus_client.parser import text_string_to_metric_families

from ..helpers import Server, wait_task


def _scrape(endpoint: str) -> tuple[str, dict[tuple[str, tuple], float]]:
    with urllib.request.urlopen(endpoint + "/metrics", timeout=30) as reply:
        assert reply.headers["Content-Type"].startswith("text/plain; version=")
        text = reply.read().decode()
    return text, {(s.name, tuple(sorted(s.labels.items()))): s.value
                  for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_count_requests_and_tasks(server, ec2, disks):
    for name in ("disk.vmdk", "again.vmdk"):  # the second one's blocks are all shared
        server.put_object("metrics-test", name, disks["vmdk"])
        task = wait_task(ec2, ec2.import_image(DiskContainers=[{"UserBucket": {
            "S3Bucket": "metrics-test", "S3Key": name}}])["ImportTaskId"])
        assert task["Status"] == "completed"
    again, = ec2.describe_snapshots(SnapshotIds=[task["SnapshotDetails"][0]["SnapshotId"]])[
        "Snapshots"]
    with pytest.raises(ClientError):
        ec2.describe_images(ImageIds=["ami-0000000000000000f"])
    text, samples = _scrape(server.endpoint)
    ok = ("vmimport_requests_total", (("action", "ImportImage"), ("service", "ec2"),
                                      ("status", "200")))
    assert samples[ok] >= 1
    refused = ("vmimport_requests_total", (("action", "DescribeImages"), ("service", "ec2"),
                                           ("status", "400")))
    assert samples[refused] >= 1
    count = ("vmimport_request_seconds_count", (("action", "ImportImage"), ("service", "ec2")))
    slowest = ("vmimport_request_seconds_bucket", (("action", "ImportImage"), ("le", "+Inf"),
                                                   ("service", "ec2")))
    assert samples[count] == samples[slowest] >= 1
    assert samples[("vmimport_tasks", (("kind", "image"), ("state", "completed")))] >= 1
    assert samples[("vmimport_snapshot_bytes", (("kind", "virtual"),))] >= \
        disks["raw"].stat().st_size
    assert 0 < samples[("vmimport_snapshot_bytes", (("kind", "stored"),))]
    stored = samples[("vmimport_snapshot_blocks", (("kind", "stored"),))]
    shared = samples[("vmimport_snapshot_blocks", (("kind", "shared"),))]
    assert stored >= shared >= again["FullSnapshotSizeInBytes"] // (512 * 1024) > 0
    assert samples[("vmimport_imported_disk_image_bytes", ())] >= disks["vmdk"].stat().st_size
    assert ("vmimport_worker_leases", ()) in samples
    # Nothing about accounts, keys or places.
    for secret in ("000000000000", "OTHERKEY", "othersecret", str(server.data_dir)):
        assert secret not in text


def test_metrics_answer_only_the_allowed_networks(app_server):
    endpoint = app_server(metrics_allowed_networks=["10.0.0.0/8"])
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(endpoint + "/metrics", timeout=10)
    assert refused.value.code == 404


def test_json_logs_have_one_object_per_line_and_no_secret(tmp_path):
    secret = "s3cr3t-that-must-not-be-logged"
    credentials = [{"access_key": "JSONLOGKEY", "secret_key": secret,
                    "account_id": "222222222222"}]
    server = Server(tmp_path / "data", env={"VMIMPORT_LOG_FORMAT": "json",
                                            "VMIMPORT_CREDENTIALS": json.dumps(credentials)})
    server.start()
    try:
        server.client("ec2", "JSONLOGKEY", secret).describe_images(Owners=["self"])
        with pytest.raises(ClientError):
            server.client("ec2", "JSONLOGKEY", "wrong-" + secret).describe_images()
    finally:
        server.stop()
    lines = [line for line in server.log_path.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # each line is one JSON object
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    messages = [r["message"] for r in records]
    assert any(m.startswith("ec2:DescribeImages ") and " JSONLOGKEY 200 " in m
               for m in messages)
    assert any(" 403 " in m or " 401 " in m for m in messages)
    assert secret not in server.log_path.read_text()
