"""The IAM action an API operation is authorized as. EC2, KMS, IAM, STS and EBS name their IAM
actions after their operations; S3 does not (its operations map onto fewer, older permission
names), so an assumed role's policy is evaluated for the names AWS documents."""

from __future__ import annotations

# S3 operation -> IAM action (AWS's "Actions, resources, and condition keys for Amazon S3").
S3_ACTIONS = {
    "ListBuckets": "ListAllMyBuckets",
    "CreateBucket": "CreateBucket",
    "HeadBucket": "ListBucket",
    "DeleteBucket": "DeleteBucket",
    "GetBucketLocation": "GetBucketLocation",
    "ListObjects": "ListBucket",
    "ListObjectsV2": "ListBucket",
    "PutObject": "PutObject",
    "GetObject": "GetObject",
    "HeadObject": "GetObject",
    "DeleteObject": "DeleteObject",
    "DeleteObjects": "DeleteObject",
    "CopyObject": "PutObject",
    "UploadPartCopy": "PutObject",
    "CreateMultipartUpload": "PutObject",
    "UploadPart": "PutObject",
    "CompleteMultipartUpload": "PutObject",
    "AbortMultipartUpload": "AbortMultipartUpload",
    "ListParts": "ListMultipartUploadParts",
    "ListMultipartUploads": "ListBucketMultipartUploads",
}


def iam_action(service: str, operation: str) -> str:
    """The action's name without its service prefix (``ListBucket`` for S3's ListObjectsV2).
    An S3 operation missing from the table is its own name, which no S3 policy grants
    unless it says ``s3:*``."""
    if service == "s3":
        return S3_ACTIONS.get(operation, operation)
    return operation
