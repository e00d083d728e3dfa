"""EC2's bounds on Describe* filters, through boto3 against the live server: one call may carry
200 filter values in all (EC2's FilterLimitExceeded beyond), and a call at the bound works."""

from __future__ import annotations

import uuid

import pytest
from botocore.exceptions import ClientError


def _refusal(call, **params) -> dict:
    with pytest.raises(ClientError) as err:
        call(**params)
    return err.value.response


def test_201_filter_values_are_refused(server):
    reader = server.client(access_key="READONLY", secret_key="readonlysecret")
    too_many = [
        (reader.describe_images, [{"Name": "name", "Values": [f"n{i}*" for i in range(201)]}]),
        (reader.describe_import_image_tasks,  # 200 + 1 over two filters
         [{"Name": "task-state", "Values": ["active"] * 200},
          {"Name": "tag:env", "Values": ["x"]}]),
        (reader.describe_tags, [{"Name": "key", "Values": [f"k{i}" for i in range(201)]}]),
    ]
    for call, filters in too_many:
        answer = _refusal(call, Filters=filters)
        assert answer["Error"]["Code"] == "FilterLimitExceeded"
        assert answer["Error"]["Message"] == (
            "The maximum number of filter values specified on a single call is 200")
        assert answer["ResponseMetadata"]["HTTPStatusCode"] == 400
    answer = _refusal(reader.describe_snapshots, Filters=[{"Name": "description",
                                                           "Values": ["d" * 256]}])
    assert answer["Error"]["Code"] == "FilterLimitExceeded"


def test_200_values_of_a_tag_filter_find_the_task(server, ec2):
    mark = uuid.uuid4().hex
    task_id = ec2.import_image(
        DiskContainers=[{"Format": "raw", "UserBucket": {"S3Bucket": "nowhere-" + mark[:8],
                                                         "S3Key": "k.raw"}}],
        TagSpecifications=[{"ResourceType": "import-image-task",
                            "Tags": [{"Key": "batch", "Value": mark}]}])["ImportTaskId"]
    others = [f"{mark[:8]}-{n}" for n in range(198)]
    reader = server.client(access_key="READONLY", secret_key="readonlysecret")
    for values in (others + [mark, mark[:8] + "*x?"], others + ["*" + mark[8:], "nope"]):
        tasks = reader.describe_import_image_tasks(
            Filters=[{"Name": "tag:batch", "Values": values}])["ImportImageTasks"]
        assert [t["ImportTaskId"] for t in tasks] == [task_id]
    tags = reader.describe_tags(Filters=[{"Name": "value", "Values": others + [mark, "x"]}])
    assert [t["ResourceId"] for t in tags["Tags"]] == [task_id]
