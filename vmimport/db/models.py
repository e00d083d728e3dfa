"""The tables. One row per task, per disk of a task, per image, per snapshot, per tag, per job.

Values that the API only echoes (ClientData, license specifications, the original request) are
kept as JSON; everything that is filtered, joined or updated by the worker has its own column.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (JSON, BigInteger, Boolean, DateTime, Float, TypeDecorator, ForeignKey, Integer,
                        LargeBinary,
                        String, Text, UniqueConstraint, Index)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(timezone.utc) if value is not None else None

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value


class Base(DeclarativeBase):
    pass


class ImportTask(Base):
    """An ImportImage (kind ``image``) or ImportSnapshot (kind ``snapshot``) task."""

    __tablename__ = "import_tasks"
    __table_args__ = (UniqueConstraint("account_id", "client_token"),
                      Index("ix_import_tasks_account_created_id", "account_id", "created_at", "id"))

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(12))
    kind: Mapped[str] = mapped_column(String(16))
    client_token: Mapped[str | None] = mapped_column(String(64))
    request_digest: Mapped[str] = mapped_column(String(64))
    # active | deleting | deleted | completed
    status: Mapped[str] = mapped_column(String(16), default="active")
    status_message: Mapped[str | None] = mapped_column(Text)
    progress: Mapped[int | None] = mapped_column(Integer)
    description: Mapped[str | None] = mapped_column(Text)
    architecture: Mapped[str | None] = mapped_column(String(16))
    platform: Mapped[str | None] = mapped_column(String(16))
    boot_mode: Mapped[str | None] = mapped_column(String(16))
    hypervisor: Mapped[str | None] = mapped_column(String(16))
    license_type: Mapped[str | None] = mapped_column(String(16))
    usage_operation: Mapped[str | None] = mapped_column(String(32))
    encrypted: Mapped[bool | None] = mapped_column(Boolean)
    kms_key_id: Mapped[str | None] = mapped_column(String(256))
    role_name: Mapped[str | None] = mapped_column(String(64))
    license_specifications: Mapped[list | None] = mapped_column(JSON)
    client_data: Mapped[dict | None] = mapped_column(JSON)
    image_id: Mapped[str | None] = mapped_column(String(32))
    cancel_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Beyond EC2's shapes, for the task's detail (pipeline/task_record.py writes them):
    # [{"Phase", "Time" (ISO 8601), "Disk"}] as the worker passed them, and what inspection
    # found on the boot volume.
    # Deferred: only the task's detail reads them, and loading them with every row of every
    # Describe*Tasks call was a third of its time.
    phases: Mapped[list | None] = mapped_column(JSON, deferred=True)
    inspection: Mapped[dict | None] = mapped_column(JSON, deferred=True)

    disks: Mapped[list["TaskDisk"]] = relationship(
        back_populates="task", order_by="[TaskDisk.position, TaskDisk.member_index]",
        cascade="all, delete-orphan",
        lazy="selectin")


class ExportTask(Base):
    """An ExportImage task: one AMI's boot volume written as a VMDK, VHD or RAW object."""

    __tablename__ = "export_tasks"
    __table_args__ = (UniqueConstraint("account_id", "client_token"),
                      Index("ix_export_tasks_account_created_id", "account_id", "created_at", "id"))

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(12))
    client_token: Mapped[str | None] = mapped_column(String(64))
    request_digest: Mapped[str] = mapped_column(String(64))
    # active | deleting | deleted | completed
    status: Mapped[str] = mapped_column(String(16), default="active")
    status_message: Mapped[str | None] = mapped_column(Text)
    progress: Mapped[int | None] = mapped_column(Integer)
    description: Mapped[str | None] = mapped_column(Text)
    image_id: Mapped[str] = mapped_column(String(32), index=True)
    disk_image_format: Mapped[str] = mapped_column(String(8))
    s3_bucket: Mapped[str] = mapped_column(String(255))
    s3_prefix: Mapped[str | None] = mapped_column(Text)
    role_name: Mapped[str] = mapped_column(String(64), default="vmimport")
    cancel_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    @property
    def object_key(self) -> str:
        """Where the export lands in the bucket, as on AWS: <S3Prefix><task id>.<format>."""
        return f"{self.s3_prefix or ''}{self.id}.{self.disk_image_format.lower()}"


class TaskDisk(Base):
    """One DiskContainer of a task, and its SnapshotDetail as the API shows it."""

    __tablename__ = "task_disks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("import_tasks.id", ondelete="CASCADE"),
                                         index=True)
    position: Mapped[int] = mapped_column(Integer)
    # A container holding several disks (OVA) becomes one row per disk: member 0, 1, ...
    member_index: Mapped[int] = mapped_column(Integer, default=0)
    description: Mapped[str | None] = mapped_column(Text)
    device_name: Mapped[str | None] = mapped_column(String(64))
    declared_format: Mapped[str | None] = mapped_column(String(16))
    format: Mapped[str | None] = mapped_column(String(16))
    url: Mapped[str | None] = mapped_column(Text)
    s3_bucket: Mapped[str | None] = mapped_column(String(255))
    s3_key: Mapped[str | None] = mapped_column(Text)
    source_snapshot_id: Mapped[str | None] = mapped_column(String(32))
    disk_image_size: Mapped[float] = mapped_column(Float, default=0.0)
    status: Mapped[str] = mapped_column(String(16), default="active")
    status_message: Mapped[str | None] = mapped_column(Text)
    progress: Mapped[int | None] = mapped_column(Integer)
    snapshot_id: Mapped[str | None] = mapped_column(String(32))

    task: Mapped[ImportTask] = relationship(back_populates="disks")


class Image(Base):
    __tablename__ = "images"
    # Pages of DescribeImages are read in this order (``listing._describe_page``).
    __table_args__ = (Index("ix_images_account_created_id", "account_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(12), index=True)
    name: Mapped[str] = mapped_column(String(128))
    description: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default="available")
    architecture: Mapped[str] = mapped_column(String(16), default="x86_64")
    platform: Mapped[str | None] = mapped_column(String(16))
    platform_details: Mapped[str] = mapped_column(String(64), default="Linux/UNIX")
    usage_operation: Mapped[str] = mapped_column(String(32), default="RunInstances")
    boot_mode: Mapped[str | None] = mapped_column(String(16))
    root_device_name: Mapped[str] = mapped_column(String(64), default="/dev/sda1")
    virtualization_type: Mapped[str] = mapped_column(String(16), default="hvm")
    hypervisor: Mapped[str] = mapped_column(String(16), default="xen")
    ena_support: Mapped[bool] = mapped_column(Boolean, default=True)
    source_task_id: Mapped[str | None] = mapped_column(String(32))
    # CopyImage: the image (and region) the copy was made from, as DescribeImages shows it.
    source_image_id: Mapped[str | None] = mapped_column(String(32))
    source_region: Mapped[str | None] = mapped_column(String(32))
    # None (disabled), "enabled-without-cooldown" or "enabled-with-cooldown"; a protection
    # with cooldown disabled still holds until ``protected_until``.
    deregistration_protection: Mapped[str | None] = mapped_column(String(32))
    protected_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # EnableImageDeprecation: from then on other accounts list it only if they ask.
    deprecation_time: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Why a ``failed`` image failed (DescribeImages' StateReason), e.g. an encrypted copy.
    state_reason_code: Mapped[str | None] = mapped_column(String(64))
    state_reason_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    mappings: Mapped[list["BlockDeviceMapping"]] = relationship(
        back_populates="image", order_by="BlockDeviceMapping.position",
        cascade="all, delete-orphan", lazy="selectin")
    launch_permissions: Mapped[list["LaunchPermission"]] = relationship(
        order_by="LaunchPermission.id", cascade="all, delete-orphan", lazy="selectin")


class BlockDeviceMapping(Base):
    __tablename__ = "block_device_mappings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    image_id: Mapped[str] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"),
                                          index=True)
    position: Mapped[int] = mapped_column(Integer)
    device_name: Mapped[str] = mapped_column(String(64))
    snapshot_id: Mapped[str] = mapped_column(String(32), index=True)
    volume_size: Mapped[int] = mapped_column(Integer)
    volume_type: Mapped[str] = mapped_column(String(16), default="gp2")
    delete_on_termination: Mapped[bool] = mapped_column(Boolean, default=True)
    encrypted: Mapped[bool] = mapped_column(Boolean, default=False)
    kms_key_id: Mapped[str | None] = mapped_column(String(256))  # key ARN when encrypted

    image: Mapped[Image] = relationship(back_populates="mappings")


class Snapshot(Base):
    __tablename__ = "snapshots"
    __table_args__ = (Index("ix_snapshots_account_started_id", "account_id", "started_at",
                            "id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(12), index=True)
    description: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default="completed")
    volume_id: Mapped[str] = mapped_column(String(32), default="vol-ffffffff")
    volume_size: Mapped[int] = mapped_column(Integer)      # GiB, rounded up, as EBS shows it
    size_bytes: Mapped[int] = mapped_column(BigInteger)    # the guest disk's exact size
    stored_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    # Of its stored blocks, those its write found stored already and shared (deduplicated):
    # in other snapshots, or earlier in the same disk. None: written before it was counted.
    shared_blocks: Mapped[int | None] = mapped_column(Integer)
    encrypted: Mapped[bool] = mapped_column(Boolean, default=False)
    kms_key_id: Mapped[str | None] = mapped_column(String(256))
    source_task_id: Mapped[str | None] = mapped_column(String(32))
    # CopyImage: the snapshot this one copies (the copy job reads its blocks).
    source_snapshot_id: Mapped[str | None] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    volume_permissions: Mapped[list["CreateVolumePermission"]] = relationship(
        order_by="CreateVolumePermission.id", cascade="all, delete-orphan", lazy="selectin")


class DeregisteredImage(Base):
    """An AMI its owner deregistered, for a day: DescribeImages names it
    ``InvalidAMIID.Unavailable`` rather than NotFound, which tools that wait for an AMI to
    go (Ansible's ec2_ami) take as gone."""

    __tablename__ = "deregistered_images"

    image_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(12), index=True)
    deregistered_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class LaunchPermission(Base):
    """Who besides its owner may use an AMI: one account (``user_id``) or everyone
    (``group_name`` 'all', a public image)."""

    __tablename__ = "launch_permissions"
    __table_args__ = (UniqueConstraint("image_id", "user_id", "group_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    image_id: Mapped[str] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[str | None] = mapped_column(String(12), index=True)
    group_name: Mapped[str | None] = mapped_column(String(8))


class CreateVolumePermission(Base):
    """Who besides its owner may read a snapshot (one account, or group 'all')."""

    __tablename__ = "create_volume_permissions"
    __table_args__ = (UniqueConstraint("snapshot_id", "user_id", "group_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    snapshot_id: Mapped[str] = mapped_column(ForeignKey("snapshots.id", ondelete="CASCADE"),
                                             index=True)
    user_id: Mapped[str | None] = mapped_column(String(12), index=True)
    group_name: Mapped[str | None] = mapped_column(String(8))


class TemporaryCredential(Base):
    """Credentials issued by STS (GetSessionToken, AssumeRole). The secret is kept sealed under
    the server's root key (it must be recoverable to verify signatures); the session token only
    as its SHA-256, since it is only ever compared."""

    __tablename__ = "temporary_credentials"

    access_key_id: Mapped[str] = mapped_column(String(32), primary_key=True)   # ASIA...
    account_id: Mapped[str] = mapped_column(String(12))
    sealed_secret: Mapped[bytes] = mapped_column(LargeBinary)
    token_sha256: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    # GetSessionToken: the long-term key whose rights the session has.
    source_access_key: Mapped[str | None] = mapped_column(String(128))
    # AssumeRole: the role whose inline policies decide what the session may do.
    role_id: Mapped[str | None] = mapped_column(String(32))
    role_arn: Mapped[str | None] = mapped_column(String(600))
    session_name: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Tag(Base):
    __tablename__ = "tags"
    __table_args__ = (UniqueConstraint("account_id", "resource_id", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(String(12))
    resource_id: Mapped[str] = mapped_column(String(64), index=True)
    resource_type: Mapped[str] = mapped_column(String(32))
    key: Mapped[str] = mapped_column(String(128))
    value: Mapped[str] = mapped_column(String(256), default="")


class Job(Base):
    """Durable work: leased by one worker at a time, taken over when the lease runs out."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_state_lease", "state", "lease_expires_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32))
    task_id: Mapped[str] = mapped_column(String(32), index=True)
    # queued | running | done | failed
    state: Mapped[str] = mapped_column(String(16), default="queued")
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class KmsKey(Base):
    """A KMS key of one account and region. Its 256-bit material is stored only sealed under
    the server's root key (``sealed_material``); see ``service.kms``."""

    __tablename__ = "kms_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)     # the KeyId (uuid)
    account_id: Mapped[str] = mapped_column(String(12), index=True)
    region: Mapped[str] = mapped_column(String(32))
    arn: Mapped[str] = mapped_column(String(256), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    # Enabled | Disabled | PendingDeletion
    state: Mapped[str] = mapped_column(String(24), default="Enabled")
    key_manager: Mapped[str] = mapped_column(String(16), default="CUSTOMER")   # or AWS
    key_usage: Mapped[str] = mapped_column(String(32), default="ENCRYPT_DECRYPT")
    key_spec: Mapped[str] = mapped_column(String(32), default="SYMMETRIC_DEFAULT")
    origin: Mapped[str] = mapped_column(String(16), default="AWS_KMS")
    policy: Mapped[str | None] = mapped_column(Text)
    tags: Mapped[list | None] = mapped_column(JSON)
    sealed_material: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    deletion_date: Mapped[datetime | None] = mapped_column(UTCDateTime)


class KmsAlias(Base):
    __tablename__ = "kms_aliases"
    __table_args__ = (UniqueConstraint("account_id", "region", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(String(12))
    region: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(256))                     # alias/...
    target_key_id: Mapped[str] = mapped_column(ForeignKey("kms_keys.id", ondelete="CASCADE"),
                                               index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class IamRole(Base):
    """An IAM role: its trust (assume-role) policy and, in ``policies``, its inline policies.
    Policy documents are kept as the JSON text the user sent."""

    __tablename__ = "iam_roles"
    # Role names are unique per account regardless of case, as on IAM.
    __table_args__ = (UniqueConstraint("account_id", "name_key"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)     # the RoleId (AROA...)
    account_id: Mapped[str] = mapped_column(String(12))
    name: Mapped[str] = mapped_column(String(64))
    name_key: Mapped[str] = mapped_column(String(64))                 # name.lower()
    path: Mapped[str] = mapped_column(String(512), default="/")
    assume_role_policy: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    max_session_duration: Mapped[int] = mapped_column(Integer, default=3600)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    policies: Mapped[list["IamRolePolicy"]] = relationship(
        back_populates="role", order_by="IamRolePolicy.name", cascade="all, delete-orphan",
        lazy="selectin")


class IamRolePolicy(Base):
    __tablename__ = "iam_role_policies"
    __table_args__ = (UniqueConstraint("role_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    role_id: Mapped[str] = mapped_column(ForeignKey("iam_roles.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    document: Mapped[str] = mapped_column(Text)

    role: Mapped[IamRole] = relationship(back_populates="policies")


class S3Bucket(Base):
    """A bucket made by CreateBucket, and the account that owns it. A directory made by hand
    under ``buckets/`` has no row: it belongs to ``Settings.s3_local_bucket_owner``."""

    __tablename__ = "s3_buckets"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(12), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class S3Object(Base):
    """What S3 knows of an object beyond its file: the ETag (an MD5 is costly to recompute)
    and the stored headers. Valid only while the file's inode, size and mtime still match
    (a file replaced by hand, or by a concurrent PUT, no longer does)."""

    __tablename__ = "s3_objects"

    bucket: Mapped[str] = mapped_column(String(63), primary_key=True)
    key: Mapped[str] = mapped_column(String(1024), primary_key=True)
    etag: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    inode: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    content_type: Mapped[str | None] = mapped_column(String(255))
    user_metadata: Mapped[dict | None] = mapped_column(JSON)


class BlockPack(Base):
    """A pack of the object-store block store that a write holds (its own, or one it shares
    blocks of): gc deletes a pack no manifest uses only once ``used_at`` is older than its grace,
    and in the same transaction as its row, so a write either sees the row and keeps the pack,
    or sees it gone (see ``blockstore/shared_index.py``)."""

    __tablename__ = "block_packs"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    used_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class BlockIndexEntry(Base):
    """The object-store block store's dedup index, shared by every process on every machine:
    block fingerprint -> where it is stored."""

    __tablename__ = "block_index"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    pack: Mapped[str] = mapped_column(String(32), ForeignKey("block_packs.name",
                                                             ondelete="CASCADE"), index=True)
    offset: Mapped[int] = mapped_column(BigInteger)
    length: Mapped[int] = mapped_column(Integer)


class MaintenanceRun(Base):
    """When a periodic maintenance (``gc``) last started and where: the workers of every
    machine take turns through this row (``jobs/gc.py``), so it runs once per interval."""

    __tablename__ = "maintenance_runs"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_by: Mapped[str | None] = mapped_column(String(128))
