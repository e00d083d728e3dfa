"""Buckets and who owns them: CreateBucket gives a bucket to the calling account; a
directory made by hand under ``DATA_DIR/buckets`` belongs to ``s3_local_bucket_owner``. Every
other account is refused, through S3 and through imports alike (AWS would need a bucket policy,
which vmimport does not serve).

Where a bucket's objects are: its directory under ``DATA_DIR/buckets``, or, with the block store
on an object store, that store (``store_buckets``): CreateBucket then makes no directory.
"""

from __future__ import annotations

import contextlib
import os

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from vmimport.config import Settings
from vmimport.db.models import S3Bucket
from vmimport.db.session import Database

from . import s3_names, store_buckets
from .bucket_files import UPLOAD_AREA, IsLink, bucket_exists, open_bucket, open_buckets_root
from .errors import S3Error

def check_name(name: str) -> None:
    why = s3_names.bucket_problem(name)
    if why:
        raise S3Error("InvalidBucketName", f"The specified bucket is not valid. {why}", name)


def owner_of(db: Database, settings: Settings, name: str) -> str | None:
    """The owning account, or None when there is no such bucket (a link is no bucket)."""
    with db.read() as session:
        account = session.scalar(select(S3Bucket.account_id).where(S3Bucket.name == name))
    if account is not None:
        in_store = store_buckets.shared_buckets(settings) is not None \
            and not _is_link(settings, name)
        return account if in_store or bucket_exists(settings.buckets_dir, name) else None
    return settings.s3_local_bucket_owner if bucket_exists(settings.buckets_dir, name) else None


def made_elsewhere(db: Database, settings: Settings, name: str) -> bool:
    """Whether CreateBucket made ``name`` (it has an owner) but its directory is not here: a
    process on another machine of the installation took the request, and with a file block
    store buckets of vmimport's own S3 API live in that process's data dir."""
    if store_buckets.shared_buckets(settings) is not None:
        return False  # every bucket CreateBucket made is in the object store
    with db.read() as session:
        made = session.scalar(select(S3Bucket.name).where(S3Bucket.name == name)) is not None
    return made and not bucket_exists(settings.buckets_dir, name) and not _is_link(settings, name)


def no_such_bucket(name: str) -> S3Error:
    return S3Error("NoSuchBucket", "The specified bucket does not exist", name)


def check_access(db: Database, settings: Settings, account_id: str, name: str) -> None:
    """NoSuchBucket or AccessDenied unless ``account_id`` owns bucket ``name``."""
    owner = owner_of(db, settings, name)
    if owner is None:
        if _is_link(settings, name):
            raise S3Error("AccessDenied", f"Access Denied: bucket {name} is a symbolic link on "
                          "the server, which vmimport never follows", name)
        raise no_such_bucket(name)
    if owner != account_id:
        raise S3Error("AccessDenied", f"Access Denied: bucket {name} belongs to another "
                      "account", name)


def authorize(db: Database, settings: Settings, account_id: str, name: str) -> int:
    """The directory descriptor of a local bucket ``account_id`` owns (to close), else
    NoSuchBucket or AccessDenied."""
    check_access(db, settings, account_id, name)
    try:
        return open_bucket(settings.buckets_dir, name)
    except (FileNotFoundError, IsLink):
        raise no_such_bucket(name) from None


def _is_link(settings: Settings, name: str) -> bool:
    return "/" not in name and os.path.islink(settings.buckets_dir / name)


def create(db: Database, settings: Settings, account_id: str, name: str) -> None:
    check_name(name)
    owner = owner_of(db, settings, name)
    if owner is None and _is_link(settings, name):
        owner = ""  # a link by that name: taken, by no one who may use it
    if owner is not None:
        if owner == account_id:
            raise S3Error("BucketAlreadyOwnedByYou", "Your previous request to create the "
                          "named bucket succeeded and you already own it.", name)
        raise S3Error("BucketAlreadyExists", "The requested bucket name is not available. The "
                      "bucket namespace is shared by all users of the system. Please select a "
                      "different name and try again.", name)
    try:
        with db.write() as session:
            session.merge(S3Bucket(name=name, account_id=account_id))
            if store_buckets.shared_buckets(settings) is not None:
                return  # in the object store: nothing to make (a raced row fails the commit)
            root = open_buckets_root(settings.buckets_dir)
            try:
                os.mkdir(name, 0o755, dir_fd=root)  # fails if one raced us: the row rolls back
            finally:
                os.close(root)
    except (FileExistsError, IntegrityError):
        raise S3Error("BucketAlreadyExists", "The requested bucket name is not available: "
                      "it was created by another request at the same time.", name) from None


def delete(db: Database, settings: Settings, account_id: str, name: str) -> None:
    shared = store_buckets.in_store(db, settings, name)
    if shared is not None:
        check_access(db, settings, account_id, name)
        why = store_buckets.has_objects(shared, name)
        if why:
            raise S3Error("BucketNotEmpty", why, name)
        with db.write() as session:
            session.query(S3Bucket).filter(S3Bucket.name == name).delete()
        return
    fd = authorize(db, settings, account_id, name)
    try:
        entries = [e for e in os.listdir(fd) if e != UPLOAD_AREA]
        if entries:
            raise S3Error("BucketNotEmpty", "The bucket you tried to delete is not empty", name)
        with contextlib.suppress(FileNotFoundError):
            uploads = os.open(UPLOAD_AREA, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW,
                              dir_fd=fd)
            try:
                if os.listdir(uploads):
                    raise S3Error("BucketNotEmpty", "The bucket you tried to delete has "
                                  "multipart uploads in progress; abort them first", name)
            finally:
                os.close(uploads)
            os.rmdir(UPLOAD_AREA, dir_fd=fd)
    finally:
        os.close(fd)
    root = open_buckets_root(settings.buckets_dir)
    try:
        with db.write() as session:
            session.query(S3Bucket).filter(S3Bucket.name == name).delete()
            os.rmdir(name, dir_fd=root)
    except OSError:
        raise S3Error("BucketNotEmpty", "The bucket you tried to delete is not empty", name) from None
    finally:
        os.close(root)


def owned_by(db: Database, settings: Settings, account_id: str) -> list[tuple[str, object]]:
    """(name, creation date or None) of every bucket the account owns, by name."""
    with db.read() as session:
        rows = {b.name: b for b in session.scalars(select(S3Bucket))}
    out = []
    root = settings.buckets_dir
    names = set(os.listdir(root)) if root.is_dir() else set()
    shared = store_buckets.shared_buckets(settings) is not None
    if shared:  # made by CreateBucket, in the object store
        names |= set(rows)
    for name in sorted(names):
        row = rows.get(name)
        owner = row.account_id if row else settings.s3_local_bucket_owner
        exists = bucket_exists(root, name) or (shared and row is not None
                                               and not _is_link(settings, name))
        if owner == account_id and exists:
            out.append((name, row.created_at if row else None))
    return out
