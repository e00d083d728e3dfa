"""The one owner of the KMS keys that protect snapshots: imports, CopyImage, EBS direct reads
(and exports) all come here, and speak one error vocabulary.

- ``resolve_task_key``: once per encrypted task, when its job starts (AWS resolves the key
  asynchronously too), the task's KmsKeyId — key id, key ARN, alias name or alias ARN, or the
  account's default ``alias/aws/ebs`` key when only ``Encrypted=true`` was given — must name an
  Enabled key of the account in this region.
- ``TaskKey.sealing``: a data key of its own for each new snapshot (GenerateDataKey, encryption
  context ``{"aws:ebs:id": <snapshot id>}``): the blocks are sealed with it, the manifest keeps
  it only wrapped.
- ``snapshot_cipher``: unwraps an encrypted manifest's data key (Decrypt; the key must still be
  Enabled and be the one the manifest names) to read the snapshot.

Failures are ``KeyCannotEncrypt`` / ``SnapshotUnreadable`` (both ``SnapshotKeyError``), whose
text is what the user is told; callers decide only how to deliver it (a failed task, an API
error).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from vmimport.blockstore.crypto import BlockCipher
from vmimport.blockstore.manifest import Manifest, ManifestEncryption
from vmimport.config import Settings
from vmimport.db.models import KmsKey
from vmimport.db.session import Database

from . import kms

# Role checks a caller may ask for before a key is used: (key ARN, KMS actions) -> None, raising
# when the caller's service role may not. AWS managed keys need no grant, so are not checked.
Authorize = Callable[[str, tuple[str, ...]], None]
WRITE_ACTIONS = ("kms:DescribeKey", "kms:GenerateDataKey")
READ_ACTIONS = ("kms:DescribeKey", "kms:Decrypt")


class SnapshotKeyError(Exception):
    """A snapshot's key cannot be used; ``str()`` is the message for the user, ``reason`` the
    KMS part of it and ``code`` KMS's error code."""

    def __init__(self, message: str, reason: str, code: str):
        super().__init__(message)
        self.reason = reason
        self.code = code


class KeyCannotEncrypt(SnapshotKeyError):
    def __init__(self, key_ref: str, problem: kms.KeyUnusable):
        super().__init__(f"The KMS key {key_ref} cannot be used to encrypt the snapshots: "
                         f"{problem.reason}", problem.reason, problem.code)
        self.key_ref = key_ref


class SnapshotUnreadable(SnapshotKeyError):
    def __init__(self, snapshot_id: str, key_arn: str, problem: kms.KeyUnusable):
        super().__init__(f"the encrypted snapshot {snapshot_id} cannot be read: "
                         f"{problem.reason}", problem.reason, problem.code)
        self.snapshot_id = snapshot_id
        self.key_arn = key_arn


@dataclass(frozen=True)
class Sealing:
    """What ``blockstore.writer.write_snapshot`` needs to write one encrypted snapshot."""

    cipher: BlockCipher
    record: ManifestEncryption


@dataclass(frozen=True)
class TaskKey:
    """The Enabled KMS key an encrypted task seals its snapshots under, resolved once."""

    account_id: str
    region: str
    key_id: str
    arn: str

    def sealing(self, db: Database, settings: Settings, snapshot_id: str) -> Sealing:
        """A fresh data key for ``snapshot_id`` (the key may have been disabled since)."""
        with db.read() as session:
            try:
                key = _key(session, self.key_id, self.arn)
                plaintext, wrapped = kms.generate_data_key(session, settings, key,
                                                           {"aws:ebs:id": snapshot_id})
            except kms.KeyUnusable as exc:
                raise KeyCannotEncrypt(self.arn, exc) from None
        return Sealing(BlockCipher(plaintext, snapshot_id),
                       ManifestEncryption(snapshot_id=snapshot_id, key_arn=self.arn,
                                          wrapped_key=wrapped))


def resolve_task_key(db: Database, settings: Settings, account_id: str, ref: str | None,
                     authorize: Authorize | None = None) -> TaskKey:
    """The key ``ref`` names (the default EBS key if None), Enabled, and usable by the caller's
    role (``authorize`` with ``WRITE_ACTIONS``)."""
    ref = ref or kms.DEFAULT_EBS_ALIAS
    with db.write() as session:  # write: alias/aws/ebs is created on first use
        try:
            key = kms.resolve_key(session, settings, account_id, settings.region, ref)
            kms.require_enabled(key)
        except kms.KeyUnusable as exc:
            raise KeyCannotEncrypt(ref, exc) from None
        found = TaskKey(account_id, settings.region, key.id, key.arn)
        customer_managed = key.key_manager == "CUSTOMER"
    if authorize is not None and customer_managed:
        authorize(found.arn, WRITE_ACTIONS)
    return found


def snapshot_cipher(db: Database, settings: Settings, manifest: Manifest, account_id: str,
                    authorize: Authorize | None = None) -> BlockCipher | None:
    """The cipher that opens an encrypted manifest's blocks for ``account_id`` (None for a
    plaintext manifest), after ``authorize`` (with ``READ_ACTIONS``) if given."""
    enc = manifest.encryption
    if enc is None:
        return None
    if authorize is not None:  # the role first: a key it may not use is not even tried
        with db.read() as session:
            key = session.get(KmsKey, enc.key_arn.rsplit("/", 1)[-1])
            customer_managed = key is not None and key.key_manager == "CUSTOMER"
        if customer_managed:
            authorize(enc.key_arn, READ_ACTIONS)
    with db.read() as session:
        try:
            plaintext, key = kms.decrypt_blob(session, settings, account_id, settings.region,
                                              enc.wrapped_key, {"aws:ebs:id": enc.snapshot_id})
            if key.arn != enc.key_arn:  # a wrapped key swapped in from another manifest
                raise kms.KeyUnusable("InvalidCiphertextException", f"the data key of "
                                      f"{enc.snapshot_id} was not wrapped by {enc.key_arn}")
        except kms.KeyUnusable as exc:
            raise SnapshotUnreadable(enc.snapshot_id, enc.key_arn, exc) from None
    return BlockCipher(plaintext, enc.snapshot_id)


def _key(session, key_id: str, arn: str) -> KmsKey:
    key = session.get(KmsKey, key_id)
    if key is None:
        raise kms.KeyUnusable(kms.NOT_FOUND, f"Key '{arn}' does not exist")
    return key
