"""KMS: per-account symmetric keys, aliases, key states, and the envelope operations
(GenerateDataKey, Encrypt, Decrypt) that encrypted snapshots use.

Key material (32 random bytes per key) is stored only sealed with AES-256-GCM under the server's
*root key* (``VMIMPORT_KMS_ROOT_KEY`` / ``VMIMPORT_KMS_ROOT_KEY_FILE``, or ``kms-root.key`` that
is generated in the data dir with mode 0600); the key's ARN is the associated data, so sealed
material cannot be moved to another key row. Ciphertext blobs name their key (like AWS's), so
Decrypt needs no KeyId.

The functions taking ``(ctx, params)`` are the API; ``resolve_key``, ``generate_data_key`` and
``decrypt_blob`` (taking a session) are what the import pipeline and the EBS reads call.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import threading
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from vmimport.blockstore.crypto import KEY_SIZE, IntegrityError, seal, unseal
from vmimport.config import Settings
from vmimport.db.models import KmsAlias, KmsKey, utcnow

from .context import Context
from .errors import ApiError

DEFAULT_EBS_ALIAS = "alias/aws/ebs"
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_ARN = re.compile(r"^arn:aws[a-z-]*:kms:(?P<region>[a-z0-9-]*):(?P<account>\d{12}):"
                  r"(?P<kind>key|alias)/(?P<name>.+)$")
_ALIAS_NAME = re.compile(r"^alias/[a-zA-Z0-9/_-]{1,250}$")
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


def _create_key(session: Session, settings: Settings, account_id: str, region: str, *,
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
    key = _create_key(session, settings, account_id, region, manager="AWS",
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


# --- the API --------------------------------------------------------------------------------

def _metadata(key: KmsKey) -> dict:
    out = {
        "AWSAccountId": key.account_id, "KeyId": key.id, "Arn": key.arn,
        "CreationDate": key.created_at, "Enabled": key.state == "Enabled",
        "Description": key.description or "", "KeyUsage": key.key_usage,
        "KeyState": key.state, "Origin": key.origin, "KeyManager": key.key_manager,
        "CustomerMasterKeySpec": key.key_spec, "KeySpec": key.key_spec,
        "EncryptionAlgorithms": ["SYMMETRIC_DEFAULT"], "MultiRegion": False,
    }
    if key.deletion_date is not None:
        out["DeletionDate"] = key.deletion_date
        out["PendingDeletionWindowInDays"] = max(1, (key.deletion_date - key.created_at).days)
    return out


def _key(session, ctx: Context, ref, *, create_default: bool = True) -> KmsKey:
    if not ref:
        raise ApiError(VALIDATION, "1 validation error detected: Value null at 'keyId' failed "
                       "to satisfy constraint: Member must not be null")
    return resolve_key(session, ctx.settings, ctx.account_id, ctx.region, ref,
                       create_default=create_default)


def _customer_key(key: KmsKey, what: str) -> None:
    if key.key_manager != "CUSTOMER":
        raise ApiError(ACCESS_DENIED, f"{key.arn} is an AWS managed key: it cannot be {what}")


def create_key(ctx: Context, params: dict) -> dict:
    spec = params.get("KeySpec") or params.get("CustomerMasterKeySpec") or "SYMMETRIC_DEFAULT"
    usage = params.get("KeyUsage") or "ENCRYPT_DECRYPT"
    if spec != "SYMMETRIC_DEFAULT" or usage != "ENCRYPT_DECRYPT":
        raise ApiError("UnsupportedOperationException", "vmimport's KMS has symmetric "
                       "encryption keys only (KeySpec SYMMETRIC_DEFAULT, KeyUsage "
                       "ENCRYPT_DECRYPT)")
    if (params.get("Origin") or "AWS_KMS") != "AWS_KMS" or params.get("MultiRegion"):
        raise ApiError("UnsupportedOperationException", "vmimport's KMS makes single-region "
                       "keys with Origin AWS_KMS only")
    with ctx.db.write() as session:
        key = _create_key(session, ctx.settings, ctx.account_id, ctx.region,
                          description=params.get("Description") or "",
                          policy=params.get("Policy"), tags=params.get("Tags"))
        return {"KeyMetadata": _metadata(key)}


def describe_key(ctx: Context, params: dict) -> dict:
    with ctx.db.write() as session:  # write: alias/aws/ebs is created on first use
        return {"KeyMetadata": _metadata(_key(session, ctx, params.get("KeyId")))}


def _page(items: list, params: dict) -> tuple[list, dict]:
    limit = params.get("Limit") or 100
    if not 1 <= limit <= 1000:
        raise ApiError(VALIDATION, "Limit must be between 1 and 1000")
    start = 0
    if params.get("Marker"):
        try:
            start = int(base64.urlsafe_b64decode(params["Marker"].encode()).decode())
        except (ValueError, UnicodeDecodeError, binascii.Error):
            raise ApiError("InvalidMarkerException", "The marker is not valid") from None
    page = items[start:start + limit]
    more = start + limit < len(items)
    extra = {"Truncated": more}
    if more:
        extra["NextMarker"] = base64.urlsafe_b64encode(str(start + limit).encode()).decode()
    return page, extra


def list_keys(ctx: Context, params: dict) -> dict:
    with ctx.db.read() as session:
        keys = list(session.scalars(select(KmsKey).where(
            KmsKey.account_id == ctx.account_id, KmsKey.region == ctx.region)
            .order_by(KmsKey.created_at, KmsKey.id)))
        page, extra = _page(keys, params)
        return {"Keys": [{"KeyId": k.id, "KeyArn": k.arn} for k in page], **extra}


def _check_alias_name(name: str | None, for_create: bool = True) -> str:
    if not name or not _ALIAS_NAME.match(name):
        raise ApiError(VALIDATION, f"Alias must start with the prefix \"alias/\" and contain "
                       f"only [a-zA-Z0-9/_-]: {name!r}")
    if for_create and name.startswith("alias/aws/"):
        raise ApiError("InvalidAliasNameException",
                       f"{name} uses the reserved prefix alias/aws/")
    return name


def _alias_target(session, ctx: Context, ref: str | None) -> KmsKey:
    if ref and (ref.startswith("alias/") or ":alias/" in ref):
        raise ApiError(VALIDATION, "TargetKeyId must be a key id or key ARN, not an alias")
    key = _key(session, ctx, ref)
    _customer_key(key, "the target of an alias")
    if key.state == "PendingDeletion":
        raise ApiError(INVALID_STATE, f"{key.arn} is pending deletion.")
    return key


def create_alias(ctx: Context, params: dict) -> dict:
    name = _check_alias_name(params.get("AliasName"))
    with ctx.db.write() as session:
        key = _alias_target(session, ctx, params.get("TargetKeyId"))
        existing = session.scalar(select(KmsAlias).where(
            KmsAlias.account_id == ctx.account_id, KmsAlias.region == ctx.region,
            KmsAlias.name == name))
        if existing is not None:
            raise ApiError("AlreadyExistsException", f"An alias with the name "
                           f"{alias_arn(ctx.region, ctx.account_id, name)} already exists")
        session.add(KmsAlias(account_id=ctx.account_id, region=ctx.region, name=name,
                             target_key_id=key.id))
    return {}


def _alias(session, ctx: Context, name: str) -> KmsAlias:
    alias = session.scalar(select(KmsAlias).where(
        KmsAlias.account_id == ctx.account_id, KmsAlias.region == ctx.region,
        KmsAlias.name == name))
    if alias is None:
        raise ApiError(NOT_FOUND, f"Alias {alias_arn(ctx.region, ctx.account_id, name)} is not "
                       "found.")
    return alias


def update_alias(ctx: Context, params: dict) -> dict:
    name = _check_alias_name(params.get("AliasName"))
    with ctx.db.write() as session:
        alias = _alias(session, ctx, name)
        key = _alias_target(session, ctx, params.get("TargetKeyId"))
        alias.target_key_id = key.id
        alias.updated_at = utcnow()
    return {}


def delete_alias(ctx: Context, params: dict) -> dict:
    name = _check_alias_name(params.get("AliasName"))
    with ctx.db.write() as session:
        session.delete(_alias(session, ctx, name))
    return {}


def list_aliases(ctx: Context, params: dict) -> dict:
    with ctx.db.write() as session:
        query = select(KmsAlias).where(KmsAlias.account_id == ctx.account_id,
                                       KmsAlias.region == ctx.region)
        if params.get("KeyId"):
            query = query.where(KmsAlias.target_key_id == _key(session, ctx,
                                                               params["KeyId"]).id)
        aliases = list(session.scalars(query.order_by(KmsAlias.name)))
        page, extra = _page(aliases, params)
        return {"Aliases": [{
            "AliasName": a.name, "AliasArn": alias_arn(ctx.region, ctx.account_id, a.name),
            "TargetKeyId": a.target_key_id, "CreationDate": a.created_at,
            "LastUpdatedDate": a.updated_at} for a in page], **extra}


def _set_state(ctx: Context, params: dict, state: str) -> dict:
    with ctx.db.write() as session:
        key = _key(session, ctx, params.get("KeyId"))
        _customer_key(key, "enabled or disabled")
        if key.state == "PendingDeletion":
            raise ApiError(INVALID_STATE, f"{key.arn} is pending deletion.")
        key.state = state
    return {}


def enable_key(ctx: Context, params: dict) -> dict:
    return _set_state(ctx, params, "Enabled")


def disable_key(ctx: Context, params: dict) -> dict:
    return _set_state(ctx, params, "Disabled")


def schedule_key_deletion(ctx: Context, params: dict) -> dict:
    days = params.get("PendingWindowInDays") or 30
    if not 7 <= days <= 30:
        raise ApiError(VALIDATION, "PendingWindowInDays must be between 7 and 30")
    with ctx.db.write() as session:
        key = _key(session, ctx, params.get("KeyId"))
        _customer_key(key, "deleted")
        if key.state == "PendingDeletion":
            raise ApiError(INVALID_STATE, f"{key.arn} is pending deletion.")
        key.state = "PendingDeletion"
        key.deletion_date = datetime.now(timezone.utc) + timedelta(days=days)
        return {"KeyId": key.arn, "DeletionDate": key.deletion_date,
                "KeyState": "PendingDeletion", "PendingWindowInDays": days}


def cancel_key_deletion(ctx: Context, params: dict) -> dict:
    with ctx.db.write() as session:
        key = _key(session, ctx, params.get("KeyId"))
        if key.state != "PendingDeletion":
            raise ApiError(INVALID_STATE, f"{key.arn} is not pending deletion.")
        key.state = "Disabled"  # as on AWS: enable it again with EnableKey
        key.deletion_date = None
        return {"KeyId": key.arn}


def generate_data_key_api(ctx: Context, params: dict) -> dict:
    spec, size = params.get("KeySpec"), params.get("NumberOfBytes")
    if spec and size:
        raise ApiError(VALIDATION, "Give KeySpec or NumberOfBytes, not both")
    if not spec and not size:
        raise ApiError(VALIDATION, "Give KeySpec or NumberOfBytes")
    size = size or {"AES_256": 32, "AES_128": 16}.get(spec, 0)
    if not 1 <= size <= 1024:
        raise ApiError(VALIDATION, f"KeySpec {spec} / NumberOfBytes {size} is not valid")
    with ctx.db.write() as session:
        key = _key(session, ctx, params.get("KeyId"))
        plaintext, blob = generate_data_key(session, ctx.settings, key,
                                            params.get("EncryptionContext"), size)
        return {"CiphertextBlob": blob, "Plaintext": plaintext, "KeyId": key.arn}


def encrypt(ctx: Context, params: dict) -> dict:
    plaintext = params.get("Plaintext") or b""
    if not 1 <= len(plaintext) <= 4096:
        raise ApiError(VALIDATION, "Plaintext must be 1 to 4096 bytes")
    with ctx.db.write() as session:
        key = _key(session, ctx, params.get("KeyId"))
        blob = encrypt_with(session, ctx.settings, key, plaintext,
                            params.get("EncryptionContext"))
        return {"CiphertextBlob": blob, "KeyId": key.arn,
                "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}


def decrypt(ctx: Context, params: dict) -> dict:
    with ctx.db.write() as session:
        plaintext, key = decrypt_blob(session, ctx.settings, ctx.account_id, ctx.region,
                                      params.get("CiphertextBlob") or b"",
                                      params.get("EncryptionContext"), params.get("KeyId"))
        return {"Plaintext": plaintext, "KeyId": key.arn,
                "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}
