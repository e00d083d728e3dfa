"""Shared test helpers: a live `vmimport serve` on a loopback port, the real AWS CLI, disks made
with qemu-img, and reading snapshots back through the EBS direct APIs."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import boto3
from botocore.config import Config

BIN = Path(sys.executable).parent
ACCOUNT = "000000000000"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fresh_database_url() -> str:
    """'' (SQLite in the data dir) unless the suite runs against PostgreSQL
    (VMIMPORT_TEST_POSTGRES_URL = a server URL with rights to create databases); then a new,
    empty database for each server, so tests do not see each other's rows."""
    base = os.environ.get("VMIMPORT_TEST_POSTGRES_URL")
    if not base:
        return ""
    import psycopg

    name = f"vmimport_test_{uuid.uuid4().hex[:12]}"
    plain = base.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    head, _, _ = base.rpartition("/")
    return f"{head}/{name}"


class Server:
    """`vmimport serve` (or workers) as a child process, stopped by PID."""

    def __init__(self, data_dir: Path, port: int | None = None, env: dict | None = None,
                 workers: int = 2, database_url: str | None = None, command: str = "serve"):
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.database_url = fresh_database_url() if database_url is None else database_url
        self.env = {**os.environ, "VMIMPORT_LEASE_SECONDS": "6", "VMIMPORT_HEARTBEAT_SECONDS":
                    "1", "VMIMPORT_POLL_SECONDS": "0.2", **(env or {})}
        self.workers = workers
        self.command = command
        self.proc: subprocess.Popen | None = None
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-{command}-{self.port}.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def buckets(self) -> Path:
        return self.data_dir / "buckets"

    def start(self) -> "Server":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [str(BIN / "vmimport"), self.command, "--data-dir", str(self.data_dir),
                "--workers", str(self.workers)]
        if self.command == "serve":
            args += ["--host", "127.0.0.1", "--port", str(self.port)]
        if self.database_url:
            args += ["--database-url", self.database_url]
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, env=self.env, stdout=self.log, stderr=self.log,
                                     start_new_session=True)
        if self.command == "serve":
            self._wait_listening()
        return self

    def _wait_listening(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}: {self.log_tail()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"server did not listen within {timeout}s: {self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def kill(self, sig=signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        if getattr(self, "log", None):
            self.log.close()

    def client(self, service: str = "ec2", access_key: str = "test", secret_key: str = "test",
               region: str = "us-east-1"):
        return boto3.client(service, endpoint_url=self.endpoint, region_name=region,
                            aws_access_key_id=access_key, aws_secret_access_key=secret_key,
                            config=Config(retries={"max_attempts": 1, "mode": "standard"},
                                          connect_timeout=5, read_timeout=60))

    def put_object(self, bucket: str, key: str, source: Path | bytes) -> None:
        target = self.buckets / bucket / key
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, bytes):
            target.write_bytes(source)
            return
        try:
            os.link(source, target)  # the server only reads it: no need for a copy
        except OSError:
            shutil.copyfile(source, target)

    def aws(self, *args: str, access_key: str = "test", secret_key: str = "test",
            check: bool = True) -> dict | subprocess.CompletedProcess:
        """Run the real AWS CLI against this server; returns parsed JSON output."""
        env = {**os.environ, "AWS_ACCESS_KEY_ID": access_key,
               "AWS_SECRET_ACCESS_KEY": secret_key, "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
               "AWS_MAX_ATTEMPTS": "1"}
        env.pop("AWS_PROFILE", None)
        proc = subprocess.run([str(BIN / "aws"), "--endpoint-url", self.endpoint,
                               "--output", "json", *args], env=env, capture_output=True,
                              text=True, timeout=120)
        if not check:
            return proc
        if proc.returncode != 0:
            raise AssertionError(f"aws {' '.join(args)} failed: {proc.stderr}")
        return json.loads(proc.stdout) if proc.stdout.strip() else {}


def wait_task(ec2, task_id: str, timeout: float = 120, snapshot: bool = False) -> dict:
    """Poll until the task is completed or deleted; return its last description."""
    deadline = time.monotonic() + timeout
    while True:
        if snapshot:
            task = ec2.describe_import_snapshot_tasks(
                ImportTaskIds=[task_id])["ImportSnapshotTasks"][0]
            status = task["SnapshotTaskDetail"]["Status"]
        else:
            task = ec2.describe_import_image_tasks(ImportTaskIds=[task_id])["ImportImageTasks"][0]
            status = task["Status"]
        if status in ("completed", "deleted"):
            return task
        if time.monotonic() > deadline:
            raise AssertionError(f"task {task_id} still {status} after {timeout}s: {task}")
        time.sleep(0.2)


def snapshot_sha256(ebs, snapshot_id: str, size_bytes: int) -> str:
    """sha256 of the whole volume read back through ListSnapshotBlocks / GetSnapshotBlock,
    checking every block's checksum header; unlisted blocks are zeros."""
    blocks, token = {}, None
    while True:
        kwargs = {"SnapshotId": snapshot_id, "MaxResults": 100}
        if token:
            kwargs["NextToken"] = token
        page = ebs.list_snapshot_blocks(**kwargs)
        block_size = page["BlockSize"]
        for b in page["Blocks"]:
            blocks[b["BlockIndex"]] = b["BlockToken"]
        token = page.get("NextToken")
        if not token:
            break
    digest = hashlib.sha256()
    import base64
    count = -(-size_bytes // block_size)
    for index in range(count):
        length = min(block_size, size_bytes - index * block_size)
        if index in blocks:
            got = ebs.get_snapshot_block(SnapshotId=snapshot_id, BlockIndex=index,
                                         BlockToken=blocks[index])
            data = got["BlockData"].read()
            assert got["ChecksumAlgorithm"] == "SHA256"
            assert base64.b64decode(got["Checksum"]) == hashlib.sha256(data).digest()
            digest.update(data[:length])
        else:
            digest.update(bytes(length))
    return digest.hexdigest()


def make_raw_disk(path: Path, size: int, seed: int = 1, data_fraction: float = 0.3) -> Path:
    """A sparse raw disk with random, text-like and zero regions at scattered places."""
    rng = random.Random(seed)
    words = [b"lorem", b"ipsum", b"vmimport", b"kernel", b"/etc/fstab", b"\n", b"root:x:0:0"]
    chunk = 64 * 1024
    with open(path, "wb") as f:
        f.truncate(size)
        for offset in range(0, size - chunk + 1, chunk):
            if rng.random() > data_fraction:
                continue
            f.seek(offset + rng.randrange(0, 512) * 0)
            if rng.random() < 0.5:
                f.write(rng.randbytes(chunk))
            else:
                text = b" ".join(rng.choice(words) for _ in range(chunk // 4))
                f.write(text[:chunk])
    return path


def qemu_convert(raw: Path, out: Path, fmt: str, *options: str) -> Path:
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", fmt, *options, str(raw), str(out)],
                   check=True, capture_output=True)
    return out


def qemu_raw_sha256(image: Path, fmt: str) -> tuple[str, int]:
    """(sha256, size) of qemu-img's own raw conversion of an image — the reference bytes."""
    out = image.with_suffix(image.suffix + ".qemu.raw")
    subprocess.run(["qemu-img", "convert", "-f", fmt, "-O", "raw", str(image), str(out)],
                   check=True, capture_output=True)
    digest = hashlib.sha256()
    with open(out, "rb") as f:
        while chunk := f.read(4 << 20):
            digest.update(chunk)
    size = out.stat().st_size
    out.unlink()
    return digest.hexdigest(), size
