"""The hostile corpus runner: every `tests/hostile/cases_*.py` case must end in a ClientError
naming what is wrong, in bounded time and memory, without opening a host file (README.md)."""

from __future__ import annotations

import importlib
import tracemalloc
import uuid
from pathlib import Path

import pytest

from tests.sources import BytesSource as _BytesSource

from tests.guards import opening_guard
from tests.helpers import wait_task
from vmimport.blockstore.file_store import FileBlockStore
from vmimport.blockstore.writer import write_snapshot
from vmimport.pipeline.errors import ImportFailure
from vmimport.pipeline.formats import Limits, open_guest_disks


HERE = Path(__file__).parent
PEAK_BYTES = 64 << 20


def _collect() -> list[tuple[str, str, object, str]]:
    cases = []
    for path in sorted(HERE.glob("cases_*.py")):
        module = importlib.import_module(f"tests.hostile.{path.stem}")
        names = set()
        for name, build, expected in module.CASES:
            assert name not in names, f"{path.stem}: duplicate case name {name!r}"
            names.add(name)
            cases.append((path.stem, name, build, expected))
    return cases


CASES = _collect()
SAMPLE = [case for n, case in enumerate(CASES) if n == 0 or CASES[n - 1][0] != case[0]]


def _id(case) -> str:
    return f"{case[0]}:{case[1]}"


def BytesSource(data: bytes, description: str = "s3://hostile/image", chunk: int | None = None):
    return _BytesSource(data, description, chunk)


@pytest.fixture
def only_tmp_paths(tmp_path, monkeypatch):
    """(refused paths, install): opening anything outside tmp_path, once installed, fails."""
    return opening_guard(tmp_path, monkeypatch)


# Readers that leave work to the block writer (``deferred_extents``: stream-optimized VMDK
# grains, also inside OVAs) are drained a second time through the writer, where faults in that
# work are found.
DEFERRING = {"cases_vmdk_stream", "cases_ova"}
DRAINS = [(case, way) for case in CASES
          for way in (("extents", "stored") if case[0] in DEFERRING else ("extents",))]


def _drain(data: bytes, way: str, store_dir: Path) -> None:
    for disk in open_guest_disks(BytesSource(data), None, Limits()):
        if way == "stored":
            write_snapshot(FileBlockStore(store_dir), disk.virtual_size, disk.deferred_extents())
            continue
        for _ in disk.extents():
            pass


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case,way", DRAINS, ids=lambda v: _id(v) if isinstance(v, tuple) else v)
def test_hostile_image(case, way, tmp_path, only_tmp_paths):
    module, name, build, expected = case
    data = build(tmp_path)
    assert isinstance(data, bytes)
    opened, install = only_tmp_paths
    install()
    tracemalloc.start()
    try:
        with pytest.raises(ImportFailure) as info:
            _drain(data, way, tmp_path / "store")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = info.value.status_message
    assert message.startswith("ClientError: "), message
    assert expected in message, f"expected {expected!r} in {message!r}"
    assert peak < PEAK_BYTES, f"{_id(case)} peaked at {peak / 2**20:.1f} MiB"
    assert opened == [], f"{_id(case)} opened host files: {opened}"


def test_corpus_size():
    assert len(CASES) >= 30
    assert {case[0] for case in CASES} >= {"cases_raw", "cases_vmdk_stream", "cases_ova",
                                          "cases_misc"}


@pytest.mark.timeout(300)
def test_sample_through_the_api(server, ec2, tmp_path):
    """One case per module, end to end: the task ends deleted with the message, and the server
    keeps serving."""
    bucket = f"hostile-{uuid.uuid4().hex[:10]}"
    started = {}
    for module, name, build, expected in SAMPLE:
        key = f"{module}/{name.replace(' ', '_').replace('/', '_')}"
        (tmp_path / module).mkdir(exist_ok=True)
        server.put_object(bucket, key, build(tmp_path / module))
        task_id = ec2.import_image(DiskContainers=[
            {"UserBucket": {"S3Bucket": bucket, "S3Key": key}}])["ImportTaskId"]
        started[task_id] = (module, name, expected)
    for task_id, (module, name, expected) in started.items():
        task = wait_task(ec2, task_id, timeout=120)
        assert task["Status"] == "deleted", (module, name, task)
        message = task["StatusMessage"]
        assert message.startswith("ClientError: ") and expected in message, (module, name, message)
        assert "ImageId" not in task
    # The server keeps serving: a fresh call answers, listing every task.
    listed = ec2.describe_import_image_tasks(ImportTaskIds=list(started))["ImportImageTasks"]
    assert {t["ImportTaskId"] for t in listed} == set(started)
