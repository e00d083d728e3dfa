"""Ctrl-C during `vmimport import` without a terminal (no one to ask): the task is cancelled,
the command exits non-zero, and the API shows the task deleted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

from ..conftest import CREDENTIALS
from ..helpers import BIN, Server, wait_task
from .terminal import with_default_sigint
from .test_client_commands import ROOT


def test_sigint_without_a_terminal_cancels_the_task(disks, tmp_path):
    # 64 KiB a second: the import is still active when the signal comes.
    server = Server(tmp_path / "data", env={
        "VMIMPORT_CREDENTIALS": json.dumps(CREDENTIALS),
        "VMIMPORT_IMPORT_MAX_BYTES_PER_SECOND": str(64 << 10)}).start()
    try:
        server.put_object("cli-slow", "slow.raw", disks["raw"])
        env = {**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
               "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
               "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
        proc = subprocess.Popen([str(BIN / "vmimport"), "import", "s3://cli-slow/slow.raw",
                                 "--endpoint-url", server.endpoint],
                                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                preexec_fn=with_default_sigint)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
        reader.start()
        try:
            # Wait until it follows the task (it says "<id> started"), however long that takes.
            deadline = time.monotonic() + 120
            while not any(line.rstrip().endswith(" started") for line in lines):
                assert proc.poll() is None, "".join(lines)
                assert time.monotonic() < deadline, "".join(lines)
                time.sleep(0.1)
            task_id = next(line.split()[0] for line in lines if line.rstrip().endswith(" started"))
            proc.send_signal(signal.SIGINT)
            returncode = proc.wait(120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        reader.join(10)
        said = "".join(lines)
        assert returncode == 130, said
        assert f"{task_id} cancelled" in said
        task = wait_task(server.client("ec2"), task_id)
        assert task["Status"] == "deleted" and "ImageId" not in task, task
        assert "vmimport import" in task.get("StatusMessage", ""), task
    finally:
        server.stop()
