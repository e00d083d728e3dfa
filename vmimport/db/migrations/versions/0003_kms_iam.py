"""KMS keys and aliases, IAM roles and inline policies; the default account's vmimport role

Revision ID: 0003
Revises: 0002
"""
import json
import secrets
from datetime import datetime, timezone

from alembic import op
import sqlalchemy as sa

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

DEFAULT_ACCOUNT = "000000000000"
# AWS's documented trust-policy.json for the vmimport role, verbatim.
TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{
        "Effect": "Allow",
        "Principal": {"Service": "vmie.amazonaws.com"},
        "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"sts:Externalid": "vmimport"}},
    }],
}
# Read every bucket, use every KMS key of the account (what the quick start needs).
ROLE_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow",
         "Action": ["s3:GetBucketLocation", "s3:GetObject", "s3:ListBucket"],
         "Resource": ["arn:aws:s3:::*"]},
        {"Effect": "Allow",
         "Action": ["ec2:ModifySnapshotAttribute", "ec2:CopySnapshot", "ec2:RegisterImage",
                    "ec2:Describe*"],
         "Resource": "*"},
        {"Effect": "Allow",
         "Action": ["kms:CreateGrant", "kms:Decrypt", "kms:DescribeKey", "kms:Encrypt",
                    "kms:GenerateDataKey*", "kms:ReEncrypt*"],
         "Resource": "*"},
    ],
}


def upgrade() -> None:
    op.create_table(
        "kms_keys",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("region", sa.String(length=32), nullable=False),
        sa.Column("arn", sa.String(length=256), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=24), nullable=False),
        sa.Column("key_manager", sa.String(length=16), nullable=False),
        sa.Column("key_usage", sa.String(length=32), nullable=False),
        sa.Column("key_spec", sa.String(length=32), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("policy", sa.Text(), nullable=True),
        sa.Column("tags", sa.JSON(), nullable=True),
        sa.Column("sealed_material", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deletion_date", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("arn"),
    )
    op.create_index("ix_kms_keys_account_id", "kms_keys", ["account_id"])
    op.create_table(
        "kms_aliases",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("region", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("target_key_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["target_key_id"], ["kms_keys.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("account_id", "region", "name"),
    )
    op.create_index("ix_kms_aliases_target_key_id", "kms_aliases", ["target_key_id"])
    roles = op.create_table(
        "iam_roles",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("name_key", sa.String(length=64), nullable=False),
        sa.Column("path", sa.String(length=512), nullable=False),
        sa.Column("assume_role_policy", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("max_session_duration", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("account_id", "name_key"),
    )
    policies = op.create_table(
        "iam_role_policies",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("role_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["role_id"], ["iam_roles.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("role_id", "name"),
    )
    with op.batch_alter_table("block_device_mappings") as batch_op:
        batch_op.add_column(sa.Column("kms_key_id", sa.String(length=256), nullable=True))
    # The embedded default account starts with a vmimport role (README quick start: no IAM step).
    role_id = "AROA" + "".join(secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
                               for _ in range(17))
    op.bulk_insert(roles, [{
        "id": role_id, "account_id": DEFAULT_ACCOUNT, "name": "vmimport",
        "name_key": "vmimport", "path": "/",
        "assume_role_policy": json.dumps(TRUST_POLICY, indent=2),
        "description": "VM Import/Export service role (created by vmimport for the default "
                       "account)",
        "max_session_duration": 3600, "created_at": datetime.now(timezone.utc)}])
    op.bulk_insert(policies, [{"role_id": role_id, "name": "vmimport",
                               "document": json.dumps(ROLE_POLICY, indent=2)}])


def downgrade() -> None:
    with op.batch_alter_table("block_device_mappings") as batch_op:
        batch_op.drop_column("kms_key_id")
    op.drop_table("iam_role_policies")
    op.drop_table("iam_roles")
    op.drop_index("ix_kms_aliases_target_key_id", table_name="kms_aliases")
    op.drop_table("kms_aliases")
    op.drop_index("ix_kms_keys_account_id", table_name="kms_keys")
    op.drop_table("kms_keys")
