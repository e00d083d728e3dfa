"""What the import service role may do: before vmimport reads a bucket object or uses a KMS key
for a task, the task's role (``RoleName``, default ``vmimport``) must allow it under IAM's rules
(``service.policy``). A refusal fails the task with AWS's text and then exactly which action on
which ARN was not allowed, and why.

A local bucket must also belong to the task's account (``service.buckets``): a role policy
cannot grant another account's bucket (AWS would need that bucket's policy).

Checked: ``s3:GetBucketLocation`` and ``s3:ListBucket`` on ``arn:aws:s3:::<bucket>``,
``s3:GetObject`` on ``arn:aws:s3:::<bucket>/<key>``; for a customer managed KMS key
``kms:DescribeKey``, ``kms:GenerateDataKey`` (writing) and ``kms:Decrypt`` (reading) on the key
ARN. (The account's AWS managed ``alias/aws/ebs`` key is usable without a role grant, as on AWS.)
"""

from __future__ import annotations

from vmimport.config import Settings
from vmimport.db.models import ImportTask, TaskDisk
from vmimport.db.session import Database
from vmimport.service import buckets, iam, policy
from vmimport.service.snapshot_keys import Authorize

from .errors import ImportFailure
from .source import FORBIDDEN, INVALID_LOCATION, parse_s3_url

S3_BUCKET_ACTIONS = ("s3:GetBucketLocation", "s3:ListBucket")


def _policies(db: Database, task: ImportTask) -> list[tuple[str, dict]]:
    name = task.role_name or "vmimport"
    with db.read() as session:
        policies = iam.role_policies(session, task.account_id, name)
    if policies is None:
        raise ImportFailure(iam.ROLE_ERROR.format(name=name) + f": no role named {name} exists "
                            f"in account {task.account_id} (it was deleted after the import "
                            "started)")
    return policies


def require(db: Database, task: ImportTask, checks: list[tuple[str, str]]) -> None:
    """Every ``(action, resource ARN)`` must be allowed to the task's role."""
    policies = _policies(db, task)
    role = task.role_name or "vmimport"
    for action, resource in checks:
        decision = policy.evaluate(policies, action, resource)
        if not decision.allowed:
            raise ImportFailure(f"{FORBIDDEN} the service role {role} is not allowed "
                                f"{action} on {resource}: {decision.reason}")


def check_source(db: Database, task: ImportTask, disk: TaskDisk,
                 settings: Settings | None = None) -> None:
    """The role may read the disk's bucket object (UserBucket or s3:// Url), and a local
    bucket is the task's account's. A presigned http(s) URL carries its own authorization, as
    on AWS: nothing to check here."""
    if disk.s3_bucket is not None:
        bucket, key = disk.s3_bucket, disk.s3_key or ""
    elif disk.url and disk.url.split("://", 1)[0].lower() in ("http", "https"):
        return
    elif disk.url:
        bucket, key = parse_s3_url(disk.url)  # https:// and bad URLs fail here as they would
    else:
        return
    if settings is not None:
        check_bucket_owner(db, settings, task, bucket)
    bucket_arn = f"arn:aws:s3:::{bucket}"
    require(db, task, [(a, bucket_arn) for a in S3_BUCKET_ACTIONS]
            + [("s3:GetObject", f"{bucket_arn}/{key}")])


def check_bucket_owner(db: Database, settings: Settings, task, bucket: str) -> None:
    """A local bucket (or a link in its place, never followed) must be the task's account's
    (an import's source, an export's destination)."""
    if (settings.buckets_dir / bucket).is_symlink():
        raise ImportFailure(f"{FORBIDDEN} bucket {bucket} is a symbolic link on the server, "
                            "which vmimport never follows")
    owner = buckets.owner_of(db, settings, bucket)
    if owner is None and buckets.made_elsewhere(db, settings, bucket):
        where = f"{INVALID_LOCATION} " if isinstance(task, ImportTask) else ""
        raise ImportFailure(
            f"{where}bucket {bucket} was made through vmimport's S3 API by a process on another "
            "machine, and its objects are in that machine's data dir, which this worker cannot "
            "read: buckets of vmimport's own S3 API are shared between machines only when the "
            "block store is an object store (blocks_url = s3://...). Put the object in the S3 "
            "store the workers use (s3_endpoint_url) instead")
    if owner is not None and owner != task.account_id:
        raise ImportFailure(f"{FORBIDDEN} Access Denied: bucket {bucket} belongs to another "
                            f"account than {task.account_id}, and a role policy cannot grant "
                            "another account's bucket")


def role_authorizer(db: Database, task: ImportTask) -> Authorize:
    """The task's role check for a customer managed KMS key, as ``service.snapshot_keys``
    asks for it (which KMS actions it needs: ``kms:GenerateDataKey`` to write,
    ``kms:Decrypt`` to read)."""
    return lambda key_arn, actions: require(db, task, [(a, key_arn) for a in actions])
