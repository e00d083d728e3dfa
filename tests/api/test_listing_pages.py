"""Pages of plain listings (MaxResults, no ids, no filters) are cut by the database; every
other call reads the account's rows and pages them itself. A client walking the pages with
NextToken (boto3's paginators) must see exactly the full listing, in its order, either way,
with the same rows hidden (old tasks, other accounts' images unless shared)."""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import update

from vmimport.db.models import ImportTask
from vmimport.db.session import Database

from ..conftest import CREDENTIALS
from ..helpers import Server, wait_task

OTHER_ACCOUNT = "111111111111"


@pytest.fixture(scope="module")
def listed(tmp_path_factory, disks):
    """A server of its own with 3 import tasks (the first aged past the retention) and 12
    AMIs (3 imported, 9 copies; one copy shared with the other account)."""
    srv = Server(tmp_path_factory.mktemp("pages") / "data",
                 env={"VMIMPORT_CREDENTIALS": json.dumps(CREDENTIALS)}).start()
    try:
        ec2 = srv.client("ec2")
        srv.put_object("pages", "disk.raw", disks["raw"])
        tasks = [wait_task(ec2, ec2.import_image(DiskContainers=[{"Format": "raw", "UserBucket": {
            "S3Bucket": "pages", "S3Key": "disk.raw"}}])["ImportTaskId"]) for _ in range(3)]
        assert all(t["Status"] == "completed" for t in tasks), tasks
        source = tasks[0]["ImageId"]
        copies = [ec2.copy_image(Name=f"copy-{n}-{uuid.uuid4().hex[:6]}", SourceImageId=source,
                                 SourceRegion="us-east-1")["ImageId"] for n in range(9)]
        deadline = time.monotonic() + 120
        while any(i["State"] != "available" for i in ec2.describe_images(ImageIds=copies)[
                "Images"]):
            assert time.monotonic() < deadline, "copies still pending"
            time.sleep(0.2)
        ec2.modify_image_attribute(ImageId=copies[4], LaunchPermission={
            "Add": [{"UserId": OTHER_ACCOUNT}]})
        db = Database(srv.database_url or f"sqlite:///{srv.data_dir / 'vmimport.db'}")
        try:
            with db.write() as session:
                session.execute(update(ImportTask).where(
                    ImportTask.id == tasks[0]["ImportTaskId"]).values(
                    finished_at=datetime.now(timezone.utc) - timedelta(days=30)))
        finally:
            db.dispose()
        yield srv, [t["ImportTaskId"] for t in tasks], copies
    finally:
        srv.stop()


def _walk(call, key: str, **params) -> list[list[str]]:
    """Every page's ids, following NextToken to the end."""
    pages, token = [], None
    while True:
        reply = call(**params, **({"NextToken": token} if token else {}))
        pages.append([item.get("ImportTaskId") or item["ImageId"] for item in reply[key]])
        token = reply.get("NextToken")
        if not token:
            return pages


def test_image_pages_are_the_full_listing_in_order(listed):
    srv, _, copies = listed
    ec2 = srv.client("ec2")
    everything = [i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]]
    assert len(everything) == 12 and set(copies) < set(everything)
    pages = _walk(ec2.describe_images, "Images", Owners=["self"], MaxResults=5)
    assert [len(p) for p in pages] == [5, 5, 2]
    assert sum(pages, []) == everything
    # Without Owners the same images (the account owns all it sees); another owner: none.
    assert sum(_walk(ec2.describe_images, "Images", MaxResults=3), []) == everything
    assert _walk(ec2.describe_images, "Images", Owners=[OTHER_ACCOUNT], MaxResults=5) == [[]]
    # The other account sees the one shared with it, and owns none.
    other = srv.client("ec2", "OTHERKEY", "othersecret")
    assert _walk(other.describe_images, "Images", MaxResults=5) == [[copies[4]]]
    assert _walk(other.describe_images, "Images", Owners=["self"], MaxResults=5) == [[]]
    # A token is an offset into the same order for a filtered (slow) walk too.
    filtered = _walk(ec2.describe_images, "Images", MaxResults=4,
                     Filters=[{"Name": "state", "Values": ["available"]}])
    assert sum(filtered, []) == everything


def test_task_pages_hide_old_tasks_as_the_full_listing_does(listed):
    srv, task_ids, _ = listed
    ec2 = srv.client("ec2")
    everything = [t["ImportTaskId"] for t in
                  ec2.describe_import_image_tasks()["ImportImageTasks"]]
    assert everything == task_ids[1:]  # the aged one is gone, the others in creation order
    assert _walk(ec2.describe_import_image_tasks, "ImportImageTasks", MaxResults=1) == [
        [task_ids[1]], [task_ids[2]]]
    bad = ec2.describe_import_image_tasks
    with pytest.raises(Exception, match="InvalidNextToken"):
        bad(MaxResults=1, NextToken="not-a-token!")
