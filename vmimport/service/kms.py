"""KMS: per-account symmetric keys, aliases, key states, and the envelope operations
(GenerateDataKey, Encrypt, Decrypt) that encrypted snapshots use.

Key material (32 random bytes per key) is stored only sealed with AES-256-GCM under the server's
*root key* (``VMIMPORT_KMS_ROOT_KEY`` / ``VMIMPORT_KMS_ROOT_KEY_FILE``, or ``kms-root.key`` that
is generated in the data dir with mode 0600); the key's ARN is the associated data, so sealed
material cannot be moved to another key row. Ciphertext blobs name their key (like AWS's), so
Decrypt needs no KeyId.

This module is the key store and the envelope operations: ``resolve_key``, ``generate_data_key``
and ``decrypt_blob`` (taking a session) are what the import pipeline and the EBS reads call.
The API actions (functions of ``(ctx, params)``) are in ``kms_api``.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import threading
import uuid
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from vmimport.blockstore.crypto import KEY_SIZE, IntegrityError, seal, unseal
from vmimport.config import Settings
from vmimport.db.models import KmsAlias, KmsKey

from .errors import ApiError

DEFAULT_EBS_ALIAS = "alias/aws/ebs"
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_ARN = re.compile(r"^arn:aws[a-z-]*:kms:(?P<region>[a-z0-9-]*):(?P<account>\d{12}):"
                  r"(?P<kind>key|alias)/(?P<name>.+)$")
ALIAS_NAME = re.compile(r"^alias/[a-zA-Z0-9/_-]{1,250}$")
_BLOB_MAGIC = b"VMK1"

# KMS error codes (JSON protocol: the exception shape names).
NOT_FOUND = "NotFoundException"
DISABLED = "DisabledException"
INVALID_STATE = "KMSInvalidStateException"
ACCESS_DENIED = "AccessDeniedException"
VALIDATION = "ValidationException"


class KeyUnusable(ApiError):
    """A key reference that names no usable key; ``reason`` is the text without the code."""

    def __init__(self, code: str, reason: str):
        super().__init__(code, reason)
        self.reason = reason


# --- the root key -------------------------------------------------------------------------

_root_cache: dict[str, bytes] = {}
_root_lock = threading.Lock()


def root_key(settings: Settings) -> bytes:
    """The 32-byte root key: configured inline, read from the configured file, or generated
    once into ``<data_dir>/kms-root.key`` (created exclusively, mode 0600)."""
    if settings.kms_root_key:
        return _decode_root(settings.kms_root_key.encode(), "VMIMPORT_KMS_ROOT_KEY")
    path = Path(settings.kms_root_key_file or settings.default_kms_root_key_file).resolve()
    with _root_lock:
        cached = _root_cache.get(str(path))
        if cached is not None:
            return cached
        if not path.exists() and settings.kms_root_key_file is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass  # another process made it first
            else:
                with os.fdopen(fd, "wb") as f:
                    f.write(base64.b64encode(os.urandom(KEY_SIZE)) + b"\n")
        try:
            key = _decode_root(path.read_bytes(), str(path))
        except FileNotFoundError:
            raise RuntimeError(f"the KMS root key file {path} does not exist") from None
        _root_cache[str(path)] = key
        return key


def _decode_root(raw: bytes, where: str) -> bytes:
    if len(raw) == KEY_SIZE:
        return raw
    try:
        key = base64.b64decode(raw.strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEY_SIZE:
        raise RuntimeError(f"the KMS root key in {where} must be 32 bytes, raw or base64")
    return key


def _material(settings: Settings, key: KmsKey) -> bytes:
    try:
        return unseal(root_key(settings), key.sealed_material, b"vmimport-kms-key\0" +
                      key.arn.encode())
    except IntegrityError:
        raise ApiError("KMSInternalException",
                       f"the material of {key.arn} cannot be unsealed: the configured KMS root "
                       "key is not the one it was sealed with", 500) from None


# --- resolving key references --------------------------------------------------------------

def key_arn(region: str, account_id: str, key_id: str) -> str:
    return f"arn:aws:kms:{region}:{account_id}:key/{key_id}"


def alias_arn(region: str, account_id: str, name: str) -> str:
    return f"arn:aws:kms:{region}:{account_id}:{name}"


def new_key(session: Session, settings: Settings, account_id: str, region: str, *,
                description: str = "", manager: str = "CUSTOMER", policy: str | None = None,
                tags: list | None = None) -> KmsKey:
    key_id = str(uuid.uuid4())
    arn = key_arn(region, account_id, key_id)
    sealed = seal(root_key(settings), os.urandom(KEY_SIZE), b"vmimport-kms-key\0" + arn.encode())
    key = KmsKey(id=key_id, account_id=account_id, region=region, arn=arn,
                 description=description, state="Enabled", key_manager=manager,
                 policy=policy, tags=tags or None, sealed_material=sealed)
    session.add(key)
    session.flush()
    return key


def _default_ebs_key(session: Session, settings: Settings, account_id: str,
                     region: str) -> KmsKey:
    """The account's AWS-managed EBS key, created on first use."""
    alias = session.scalar(select(KmsAlias).where(
        KmsAlias.account_id == account_id, KmsAlias.region == region,
        KmsAlias.name == DEFAULT_EBS_ALIAS))
    if alias is not None:
        return session.get(KmsKey, alias.target_key_id)
    key = new_key(session, settings, account_id, region, manager="AWS",
                      description="Default key that protects my EBS volumes when no other "
                                  "key is defined")
    session.add(KmsAlias(account_id=account_id, region=region, name=DEFAULT_EBS_ALIAS,
                         target_key_id=key.id))
    session.flush()
    return key


def resolve_key(session: Session, settings: Settings, account_id: str, region: str,
                ref: str, *, create_default: bool = True) -> KmsKey:
    """The key that ``ref`` (key id, key ARN, alias name or alias ARN) names for this account
    and region; raises ``KeyUnusable`` saying why there is none. The key's state is not
    checked here (see ``require_enabled``)."""
    ref = (ref or "").strip()
    m = _ARN.match(ref)
    if m:
        if m["account"] != account_id:
            raise KeyUnusable(ACCESS_DENIED, f"the key {ref} belongs to account "
                              f"{m['account']}, not to {account_id}, and is not shared with it")
        if m["region"] != region:
            raise KeyUnusable(NOT_FOUND, f"the key {ref} is in region {m['region'] or '(none)'}"
                              f", not in {region}: keys must be in the region of the import")
        ref = m["name"] if m["kind"] == "key" else f"alias/{m['name']}"
    if ref.startswith("alias/"):
        alias = session.scalar(select(KmsAlias).where(
            KmsAlias.account_id == account_id, KmsAlias.region == region,
            KmsAlias.name == ref))
        if alias is None:
            if ref == DEFAULT_EBS_ALIAS and create_default:
                return _default_ebs_key(session, settings, account_id, region)
            raise KeyUnusable(NOT_FOUND, f"Alias {alias_arn(region, account_id, ref)} is not "
                              "found.")
        return session.get(KmsKey, alias.target_key_id)
    if not _UUID.match(ref):
        raise KeyUnusable(NOT_FOUND, f"Invalid keyId '{ref}'")
    key = session.get(KmsKey, ref)
    if key is None or key.account_id != account_id or key.region != region:
        raise KeyUnusable(NOT_FOUND, f"Key '{key_arn(region, account_id, ref)}' does not exist")
    return key


def require_enabled(key: KmsKey) -> None:
    if key.state == "Disabled":
        raise KeyUnusable(DISABLED, f"{key.arn} is disabled.")
    if key.state == "PendingDeletion":
        raise KeyUnusable(INVALID_STATE, f"{key.arn} is pending deletion.")


def _context_aad(key_id: str, context: dict | None) -> bytes:
    canonical = json.dumps(context or {}, sort_keys=True, separators=(",", ":"))
    return b"vmimport-kms\0" + key_id.encode() + b"\0" + canonical.encode()


def encrypt_with(session: Session, settings: Settings, key: KmsKey, plaintext: bytes,
                 context: dict | None = None) -> bytes:
    require_enabled(key)
    sealed = seal(_material(settings, key), plaintext, _context_aad(key.id, context))
    kid = key.id.encode()
    return _BLOB_MAGIC + bytes([len(kid)]) + kid + sealed


def generate_data_key(session: Session, settings: Settings, key: KmsKey,
                      context: dict | None = None, size: int = 32) -> tuple[bytes, bytes]:
    """(plaintext data key, ciphertext blob) — GenerateDataKey."""
    plaintext = os.urandom(size)
    return plaintext, encrypt_with(session, settings, key, plaintext, context)


def decrypt_blob(session: Session, settings: Settings, account_id: str, region: str,
                 blob: bytes, context: dict | None = None,
                 expected_key: str | None = None) -> tuple[bytes, KmsKey]:
    """(plaintext, key) — Decrypt, for a blob made by this service."""
    invalid = KeyUnusable("InvalidCiphertextException", "The ciphertext is invalid or was not "
                          "made by this service")
    if len(blob) < 5 or blob[:4] != _BLOB_MAGIC:
        raise invalid
    n = blob[4]
    key_id = blob[5:5 + n].decode("ascii", "replace")
    key = session.get(KmsKey, key_id)
    if key is None:
        raise invalid
    if key.account_id != account_id:
        raise KeyUnusable(ACCESS_DENIED, f"the ciphertext was made with {key.arn}, a key of "
                          f"another account")
    if expected_key is not None:
        wanted = resolve_key(session, settings, account_id, region, expected_key)
        if wanted.id != key.id:
            raise KeyUnusable("IncorrectKeyException", f"The key ID in the request does not "
                              f"identify the key that encrypted the ciphertext ({key.arn})")
    require_enabled(key)
    try:
        plaintext = unseal(_material(settings, key), blob[5 + n:], _context_aad(key.id, context))
    except IntegrityError:
        raise KeyUnusable("InvalidCiphertextException", "The ciphertext is invalid, altered, "
                          "or its encryption context does not match") from None
    return plaintext, key
