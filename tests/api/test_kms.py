"""KMS on the same endpoint (JSON protocol): keys, aliases, states, envelope operations — through
the AWS CLI (as AWS's documentation shows the commands) and boto3."""

from __future__ import annotations

import base64
import os
import stat
import uuid

import botocore.model
import botocore.serialize
import pytest
from botocore.exceptions import ClientError

from vmimport.api import json_protocol
from vmimport.api.models import service_model


def _code(call, *args, **kwargs) -> str:
    with pytest.raises(ClientError) as err:
        call(*args, **kwargs)
    return err.value.response["Error"]["Code"]


def test_documented_key_setup_with_cli(server):
    key = server.aws("kms", "create-key", "--description", "key for VM Import")["KeyMetadata"]
    assert key["KeyState"] == "Enabled" and key["KeyManager"] == "CUSTOMER"
    assert key["Arn"] == f"arn:aws:kms:us-east-1:000000000000:key/{key['KeyId']}"
    alias = "alias/vmimport-" + uuid.uuid4().hex[:8]
    server.aws("kms", "create-alias", "--alias-name", alias, "--target-key-id", key["KeyId"])
    for ref in (key["KeyId"], key["Arn"], alias, f"arn:aws:kms:us-east-1:000000000000:{alias}"):
        described = server.aws("kms", "describe-key", "--key-id", ref)["KeyMetadata"]
        assert described["Arn"] == key["Arn"], ref
    aliases = server.aws("kms", "list-aliases", "--key-id", key["KeyId"])["Aliases"]
    assert [a["AliasName"] for a in aliases] == [alias]
    assert key["KeyId"] in [k["KeyId"] for k in server.aws("kms", "list-keys")["Keys"]]


def test_envelope_operations(server, tmp_path):
    kms = server.client("kms")
    key = kms.create_key()["KeyMetadata"]
    data_key = kms.generate_data_key(KeyId=key["KeyId"], KeySpec="AES_256",
                                     EncryptionContext={"purpose": "test"})
    assert len(data_key["Plaintext"]) == 32 and data_key["KeyId"] == key["Arn"]
    assert kms.decrypt(CiphertextBlob=data_key["CiphertextBlob"],
                       EncryptionContext={"purpose": "test"})["Plaintext"] == \
        data_key["Plaintext"]
    assert _code(kms.decrypt, CiphertextBlob=data_key["CiphertextBlob"]) == \
        "InvalidCiphertextException"  # wrong encryption context
    blob = kms.encrypt(KeyId=key["Arn"], Plaintext=b"secret")["CiphertextBlob"]
    assert b"secret" not in blob
    assert kms.decrypt(CiphertextBlob=blob, KeyId=key["KeyId"])["Plaintext"] == b"secret"
    other = kms.create_key()["KeyMetadata"]
    assert _code(kms.decrypt, CiphertextBlob=blob, KeyId=other["KeyId"]) == \
        "IncorrectKeyException"
    tampered = bytearray(blob)
    tampered[-1] ^= 1
    assert _code(kms.decrypt, CiphertextBlob=bytes(tampered)) == "InvalidCiphertextException"
    # The CLI (v1): blobs go in as fileb://, come out base64.
    out = server.aws("kms", "encrypt", "--key-id", key["KeyId"], "--plaintext", "via cli")
    (tmp_path / "blob").write_bytes(base64.b64decode(out["CiphertextBlob"]))
    plain = server.aws("kms", "decrypt", "--ciphertext-blob", f"fileb://{tmp_path / 'blob'}")
    assert base64.b64decode(plain["Plaintext"]) == b"via cli"


def test_key_states(server):
    kms = server.client("kms")
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.disable_key(KeyId=key)
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "Disabled"
    assert _code(kms.encrypt, KeyId=key, Plaintext=b"x") == "DisabledException"
    kms.enable_key(KeyId=key)
    blob = kms.encrypt(KeyId=key, Plaintext=b"x")["CiphertextBlob"]
    scheduled = kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=7)
    assert scheduled["KeyState"] == "PendingDeletion" and scheduled["PendingWindowInDays"] == 7
    meta = kms.describe_key(KeyId=key)["KeyMetadata"]
    assert meta["KeyState"] == "PendingDeletion" and "DeletionDate" in meta
    assert _code(kms.decrypt, CiphertextBlob=blob) == "KMSInvalidStateException"
    assert _code(kms.enable_key, KeyId=key) == "KMSInvalidStateException"
    kms.cancel_key_deletion(KeyId=key)
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "Disabled"
    kms.enable_key(KeyId=key)
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"x"


def test_aliases(server):
    kms = server.client("kms")
    a, b = (kms.create_key()["KeyMetadata"]["KeyId"] for _ in range(2))
    name = "alias/a-" + uuid.uuid4().hex[:8]
    kms.create_alias(AliasName=name, TargetKeyId=a)
    assert _code(kms.create_alias, AliasName=name, TargetKeyId=b) == "AlreadyExistsException"
    kms.update_alias(AliasName=name, TargetKeyId=b)
    assert kms.describe_key(KeyId=name)["KeyMetadata"]["KeyId"] == b
    assert _code(kms.create_alias, AliasName="alias/aws/mine", TargetKeyId=a) == \
        "InvalidAliasNameException"
    assert _code(kms.create_alias, AliasName="noprefix", TargetKeyId=a) == "ValidationException"
    kms.delete_alias(AliasName=name)
    assert _code(kms.describe_key, KeyId=name) == "NotFoundException"
    assert _code(kms.delete_alias, AliasName=name) == "NotFoundException"


def test_default_ebs_key_created_on_first_use(server):
    kms = server.client("kms", "OTHERKEY", "othersecret")
    meta = kms.describe_key(KeyId="alias/aws/ebs")["KeyMetadata"]
    assert meta["KeyManager"] == "AWS" and meta["AWSAccountId"] == "111111111111"
    assert kms.describe_key(KeyId="alias/aws/ebs")["KeyMetadata"]["KeyId"] == meta["KeyId"]
    names = [a["AliasName"] for a in kms.list_aliases()["Aliases"]]
    assert "alias/aws/ebs" in names
    assert _code(kms.disable_key, KeyId=meta["KeyId"]) == "AccessDeniedException"


def test_keys_are_per_account(server):
    mine = server.client("kms")
    other = server.client("kms", "OTHERKEY", "othersecret")
    key = mine.create_key()["KeyMetadata"]
    blob = mine.encrypt(KeyId=key["KeyId"], Plaintext=b"x")["CiphertextBlob"]
    assert _code(other.describe_key, KeyId=key["KeyId"]) == "NotFoundException"
    assert _code(other.describe_key, KeyId=key["Arn"]) == "AccessDeniedException"
    assert _code(other.decrypt, CiphertextBlob=blob) == "AccessDeniedException"
    assert key["KeyId"] not in [k["KeyId"] for k in other.list_keys()["Keys"]]
    assert _code(mine.describe_key, KeyId=key["Arn"].replace("us-east-1", "eu-west-1")) == \
        "NotFoundException"


def test_refusals(server):
    kms = server.client("kms")
    assert _code(kms.describe_key, KeyId="not-a-key") == "NotFoundException"
    assert _code(kms.describe_key, KeyId=str(uuid.uuid4())) == "NotFoundException"
    assert _code(kms.create_key, KeySpec="RSA_2048") == "UnsupportedOperationException"
    assert _code(kms.generate_data_key, KeyId="alias/aws/ebs") == "ValidationException"
    assert _code(kms.get_key_policy, KeyId="alias/aws/ebs", PolicyName="default") == \
        "UnsupportedOperationException"
    readonly = server.client("kms", "READONLY", "readonlysecret")
    assert _code(readonly.create_key) == "AccessDeniedException"
    assert readonly.describe_key(KeyId="alias/aws/ebs")["KeyMetadata"]["KeyManager"] == "AWS"
    wrong = server.client("kms", "test", "wrong-secret")
    assert _code(wrong.list_keys) in ("InvalidSignatureException", "SignatureDoesNotMatch")


def test_root_key_file_is_owner_only_and_material_sealed(server):
    path = server.data_dir / "kms-root.key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_json_protocol_parses_what_botocore_serializes():
    model = service_model("kms")
    op = model.operation_model("GenerateDataKey")
    params = {"KeyId": "alias/x", "EncryptionContext": {"a": "b"}, "NumberOfBytes": 64,
              "GrantTokens": ["t"]}
    request = botocore.serialize.create_serializer("json").serialize_to_request(params, op)
    assert request["headers"]["X-Amz-Target"] == "TrentService.GenerateDataKey"
    assert json_protocol.operation_for("kms", request["headers"]["X-Amz-Target"]).name == \
        "GenerateDataKey"
    assert json_protocol.parse_request(op, request["body"]) == params
    op = model.operation_model("Decrypt")
    params = {"CiphertextBlob": b"\x00\xffblob"}
    request = botocore.serialize.create_serializer("json").serialize_to_request(params, op)
    assert json_protocol.parse_request(op, request["body"]) == params
