"""The processes a benchmark measures: `vmimport serve` (and moto's server) as children stopped by
PID, a peak-RSS sampler over a whole process tree, and timed subprocesses (qemu-img)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import NamedTuple

import boto3
from botocore.config import Config

BIN = Path(sys.executable).parent
ACCESS_KEY, SECRET_KEY, REGION = "test", "test", "us-east-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}: {tail(log)}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server did not listen on {port} within {timeout}s: {tail(log)}")


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def client(endpoint: str, service: str = "ec2", keys: dict | None = None):
    """``keys``: {"access_key", "secret_key"} (a cluster's own); the default pair otherwise."""
    keys = keys or {"access_key": ACCESS_KEY, "secret_key": SECRET_KEY}
    return boto3.client(service, endpoint_url=endpoint, region_name=REGION,
                        aws_access_key_id=keys["access_key"],
                        aws_secret_access_key=keys["secret_key"],
                        config=Config(retries={"max_attempts": 1, "mode": "standard"},
                                      connect_timeout=10, read_timeout=120,
                                      max_pool_connections=4))


class Child:
    """A server subprocess in its own session, stopped by its PID (process group)."""

    def __init__(self, args: list[str], log: Path, port: int, env: dict | None = None):
        self.args, self.log_path, self.port = args, log, port
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def start(self):
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, env=self.env, stdout=self._log,
                                     stderr=self._log, start_new_session=True)
        wait_listening(self.port, self.proc, self.log_path)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=20)
        if getattr(self, "_log", None):
            self._log.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class VmimportServer(Child):
    """`vmimport serve` on a loopback port with its own data dir (SQLite, block store, buckets)."""

    def __init__(self, data_dir: Path, workers: int = 2, env: dict | None = None):
        self.data_dir = Path(data_dir)
        port = free_port()
        exe = BIN / "vmimport"
        args = [str(exe) if exe.exists() else sys.executable, *([] if exe.exists() else
                ["-m", "vmimport.cli"]), "serve", "--data-dir", str(self.data_dir),
                "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
        self.workers = workers
        super().__init__(args, self.data_dir.parent / f"{self.data_dir.name}-serve.log", port, env)

    def api_pids(self, timeout: float = 60) -> list[int]:
        """The processes that answer the API: serve's children but its worker process (with
        ``api_processes`` > 1), else serve itself. Waits for serve's "serving on" line, which
        says how many there are (it listens before they are all forked)."""
        if getattr(self, "_api_pids", None) and all(os.path.exists(f"/proc/{p}")
                                                    for p in self._api_pids):
            return self._api_pids  # found before, all still there: no rereading of the log
        deadline = time.monotonic() + timeout
        while True:
            said = re.findall(r"serving on .*?(\d+) API process",
                              self.log_path.read_text(errors="replace"))
            api = []
            for pid in _proc_tree(self.pid):
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        argv = f.read().split(b"\0")
                except OSError:
                    continue
                if pid != self.pid and b"serve" in argv:
                    api.append(pid)
            wanted = int(said[-1]) if said else None  # the last start's
            if wanted == 1:
                api = [self.pid]
            if wanted is not None and len(api) == wanted:
                self._api_pids = api
                return api
            if time.monotonic() > deadline:
                raise RuntimeError(f"serve's API processes not found: {tail(self.log_path)}")
            time.sleep(0.1)

    def put(self, bucket: str, key: str, source: Path) -> None:
        """Make ``source`` the object ``bucket/key`` (a hard link: no copy of GiBs)."""
        target = self.data_dir / "buckets" / bucket / key
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            target.unlink()
        try:
            os.link(source, target)
        except OSError:
            subprocess.run(["cp", "--sparse=always", str(source), str(target)], check=True)

    def finished_at(self, task_id: str, table: str = "import_tasks") -> float | None:
        """When the server marked the task finished (epoch seconds), from its SQLite database
        (``table``: import_tasks or export_tasks)."""
        import sqlite3
        from datetime import datetime, timezone

        with sqlite3.connect(f"file:{self.data_dir / 'vmimport.db'}?mode=ro", uri=True) as db:
            row = db.execute(f"SELECT finished_at FROM {table} WHERE id = ?",
                             (task_id,)).fetchone()
        if not row or not row[0]:
            return None
        return datetime.fromisoformat(row[0]).replace(tzinfo=timezone.utc).timestamp()

    def stored_seconds(self, task_id: str) -> float | None:
        """The seconds the worker took to convert and store the task's volumes (its log's
        "stored in" lines): the import without the API, the queue, inspection and the AMI."""
        pattern = re.compile(rf"task {re.escape(task_id)}: \S+ volume \d+ stored in "
                             rf"([0-9.]+)s")
        found = pattern.findall(self.log_path.read_text(errors="replace"))
        return sum(float(s) for s in found) if found else None

    def drop(self, bucket: str, key: str) -> None:
        (self.data_dir / "buckets" / bucket / key).unlink(missing_ok=True)

    def clear_blocks(self) -> None:
        """Forget every stored block, so the next import stores all its blocks again (the block
        store dedups by content: a second import of the same disk would write nothing).
        Call only while no import runs."""
        shutil.rmtree(self.data_dir / "blocks" / "packs", ignore_errors=True)
        (self.data_dir / "blocks" / "packs").mkdir(parents=True)
        for name in ("index.sqlite", "index.sqlite-wal", "index.sqlite-shm"):
            (self.data_dir / "blocks" / name).unlink(missing_ok=True)


def moto_server(log_dir: Path) -> Child:
    port = free_port()
    exe = BIN / "moto_server"
    args = ([str(exe)] if exe.exists() else [sys.executable, "-m", "moto.server"])
    return Child(args + ["-p", str(port)], log_dir / "moto.log", port)


# ------------------------------------------------------------------ memory


def tree_rss(pids: list[int]) -> int:
    """Resident bytes of the processes ``pids`` (a tree: see ``_proc_tree``)."""
    return sum(proc_kib(p, "status", "VmRSS:") for p in pids) * 1024


def tree_pss(pids: list[int]) -> int:
    """Proportional set size of the processes ``pids`` (shared pages divided among the
    processes sharing them); RSS where smaps_rollup is not available."""
    return sum(proc_kib(p, "smaps_rollup", "Pss:") or proc_kib(p, "status", "VmRSS:")
               for p in pids) * 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its live descendants (``serve`` and its worker
    process), threads included, for 'where does time go'."""
    ticks = 0
    for p in _proc_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return ticks / os.sysconf("SC_CLK_TCK")


def _proc_tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def proc_kib(pid: int, name: str, key: str) -> int:
    """The KiB figure on the ``key`` line of /proc/<pid>/<name>; 0 if there is none."""
    try:
        with open(f"/proc/{pid}/{name}") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class MemorySampler:
    """Samples the memory of a process tree every ``interval`` seconds in a thread; ``peak`` is
    the largest sum seen since the last ``reset()``, counted as PSS: ``serve`` runs its
    conversions in a child process, and summing RSS would count the pages the two share (the
    Python runtime and libraries, ~12 MiB each) twice. ``peak_rss`` keeps that sum too. PSS
    (/proc/<pid>/smaps_rollup, ~1 ms a read) is read only when the cheap RSS sum reaches a new
    high, and the tree (a walk of /proc, ~0.8 ms) is found again only at ``reset()`` and once a
    second, so sampling does not load the machine it measures."""

    TREE_EVERY = 1.0  # seconds between walks of /proc for the tree's processes

    def __init__(self, pid: int, interval: float = 0.05):
        self.pid, self.interval = pid, interval
        self.peak = self.peak_rss = 0
        self._pids: list[int] = []
        self._tree_at = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="memory-sampler")

    def _sample(self, new_tree: bool = False) -> None:
        if new_tree or time.monotonic() - self._tree_at > self.TREE_EVERY:
            self._pids, self._tree_at = _proc_tree(self.pid), time.monotonic()
        rss = tree_rss(self._pids)
        if rss >= self.peak_rss:
            self.peak_rss = rss
            self.peak = max(self.peak, tree_pss(self._pids))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def reset(self) -> None:
        self.peak = self.peak_rss = 0
        self._sample(new_tree=True)

    def __enter__(self):
        self.reset()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


class Timed(NamedTuple):
    seconds: float  # wall
    peak_rss: int  # bytes
    cpu: float  # user + system seconds
    system: float = 0.0  # of which system (kernel) seconds


def timed_command(args: list[str]) -> Timed:
    """Wall seconds, peak RSS and CPU seconds of one command, which must succeed. The peak is
    the process's VmHWM, polled every 10 ms (``ru_maxrss`` would count the parent's pages that
    the child shares between fork and exec); the CPU time is its rusage when reaped."""
    import tempfile

    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err)
        peak = 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, proc_kib(proc.pid, "status", "VmHWM:") * 1024)
            time.sleep(0.01)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{' '.join(args)} failed: "
                               f"{err.read().decode(errors='replace').strip()}")
    return Timed(seconds, peak, usage.ru_utime + usage.ru_stime, usage.ru_stime)
