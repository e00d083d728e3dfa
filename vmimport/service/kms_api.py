"""The KMS API actions (JSON protocol): keys, aliases, key states, and GenerateDataKey /
Encrypt / Decrypt for clients. The key store and the envelope operations are in ``kms``."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from vmimport.db.models import KmsAlias, KmsKey, utcnow

from .context import Context
from .errors import ApiError
from .kms import (ACCESS_DENIED, ALIAS_NAME, INVALID_STATE, NOT_FOUND, VALIDATION, alias_arn,
                  decrypt_blob, encrypt_with, generate_data_key, new_key, resolve_key)

# --- keys --------------------------------------------------------------------------------

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
        key = new_key(session, ctx.settings, ctx.account_id, ctx.region,
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
    if not name or not ALIAS_NAME.match(name):
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
