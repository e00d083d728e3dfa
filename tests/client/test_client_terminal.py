"""`vmimport import` in a pseudo-terminal, as a person sees it: the progress bars render and end
cleanly, the summary names the OS, version and kernel; Ctrl-C asks whether to cancel the task
and does what the answer says. (Without a terminal to ask on it cancels:
test_client_interrupt.py.)"""

from __future__ import annotations

import os

import pytest

from ..helpers import BIN, Server, wait_task
from .terminal import Terminal
from .test_client_commands import ROOT


def _env(server) -> dict:
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
           "VMIMPORT_ENDPOINT_URL": server.endpoint,
           "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
    env.pop("AWS_PROFILE", None)
    return env


@pytest.fixture
def terminal():
    opened = []

    def start(server, *args: str) -> Terminal:
        opened.append(Terminal([str(BIN / "vmimport"), *args], _env(server)))
        return opened[-1]

    yield start
    for one in opened:
        one.close()


@pytest.fixture
def idle_server(tmp_path):
    """No worker: a task stays active until cancelled, however slow the machine is."""
    server = Server(tmp_path / "data", workers=0).start()
    yield server
    server.stop()


def test_progress_bars_render_and_end_cleanly(server, disks, terminal):
    run = terminal(server, "import", str(disks["vmdk"]), "--bucket", "tty-uploads")
    assert run.wait(240) == 0, run.plain
    screen = run.plain
    print(run.text)  # shown when the test fails: the screen as the terminal got it
    # The upload's bar (bytes, rate) and the task's bar, each drawn to its end.
    size = f"{disks['vmdk'].stat().st_size / 1e6:.1f}"
    assert "upload disk.vmdk" in screen and f"{size}/{size} MB" in screen
    assert "━" in screen and "100%" in screen
    assert "\x1b[?25l" in run.text and run.text.rindex("\x1b[?25h") > run.text.rindex("\x1b[?25l")
    # The summary follows the bars on lines of its own, nothing drawn over it.
    summary = screen[screen.index("AMI"):]
    lines = dict(line.strip().split(None, 1) if line.strip().count(" ") else (line.strip(), "")
                 for line in summary.splitlines() if line.strip())
    assert lines["AMI"].startswith("ami-")
    assert "Ubuntu 22.04.3 LTS" in summary and "5.15.0-91-generic" in summary
    assert "22.04" in summary and "legacy-bios" in summary
    assert "\x1b[" not in run.text[run.text.index("AMI"):].replace("\x1b[?25h", "")


def test_summary_names_the_os_even_with_a_description_of_ones_own(server, disks, terminal):
    # The AMI's description is then the user's: the OS comes from vmimport's task detail.
    server.put_object("tty-uploads", "mine.vmdk", disks["vmdk"])
    run = terminal(server, "import", "s3://tty-uploads/mine.vmdk", "--description", "mine")
    assert run.wait(240) == 0, run.plain
    assert "Ubuntu 22.04.3 LTS" in run.plain and "5.15.0-91-generic" in run.plain


def _start_waiting_import(server, terminal) -> tuple[Terminal, str]:
    server.put_object("waiting", "disk.raw", b"\0" * (1 << 20))
    run = terminal(server, "import", "s3://waiting/disk.raw")
    task_id = run.expect(r"(import-ami-[0-9a-f]+) started").group(1)
    run.expect(r"pending|active")  # the task's bar is drawn: it is being followed
    return run, task_id


def test_ctrl_c_asks_and_cancels_the_task(idle_server, terminal):
    run, task_id = _start_waiting_import(idle_server, terminal)
    run.interrupt()
    run.expect(rf"Cancel {task_id}\? \[y/N\]")
    run.type("y\r")
    assert run.wait() == 130
    assert f"{task_id} cancelled" in run.plain
    task = wait_task(idle_server.client("ec2"), task_id)
    assert task["Status"] == "deleted" and "interrupted in vmimport import" in task["StatusMessage"]


def test_ctrl_c_answered_no_leaves_the_task_running(idle_server, terminal):
    run, task_id = _start_waiting_import(idle_server, terminal)
    run.interrupt()
    run.expect(rf"Cancel {task_id}\?")
    run.type("n\r")
    assert run.wait() == 130
    assert "goes on" in run.plain
    task = idle_server.client("ec2").describe_import_image_tasks(ImportTaskIds=[task_id])[
        "ImportImageTasks"][0]
    assert task["Status"] == "active"

