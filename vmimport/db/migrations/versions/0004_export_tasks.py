"""export_tasks: ExportImage; the default account's vmimport role may write exports

Revision ID: 0004
Revises: 0003
"""
import copy
import json

from alembic import op
import sqlalchemy as sa

# The policy 0003 gave the default account's vmimport role, and what AWS's documented export
# policy adds (s3:GetBucketAcl and s3:PutObject on the export bucket): a role still holding the
# original is given the addition, one the user changed is left alone.
EXPORT_ACTIONS = ["s3:GetBucketAcl", "s3:PutObject"]


def _policy_0003():
    from importlib import import_module
    return import_module("vmimport.db.migrations.versions.0003_kms_iam").ROLE_POLICY


revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "export_tasks",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("account_id", sa.String(12), nullable=False),
        sa.Column("client_token", sa.String(64)),
        sa.Column("request_digest", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("status_message", sa.Text()),
        sa.Column("progress", sa.Integer()),
        sa.Column("description", sa.Text()),
        sa.Column("image_id", sa.String(32), nullable=False, index=True),
        sa.Column("disk_image_format", sa.String(8), nullable=False),
        sa.Column("s3_bucket", sa.String(255), nullable=False),
        sa.Column("s3_prefix", sa.Text()),
        sa.Column("role_name", sa.String(64), nullable=False),
        sa.Column("cancel_reason", sa.Text()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("account_id", "client_token"),
    )
    op.create_index("ix_export_tasks_account_created", "export_tasks",
                    ["account_id", "created_at"])
    original = json.dumps(_policy_0003(), indent=2)
    widened = copy.deepcopy(_policy_0003())
    widened["Statement"][0]["Action"] += EXPORT_ACTIONS
    op.get_bind().execute(
        sa.text("UPDATE iam_role_policies SET document = :new WHERE name = 'vmimport' "
                "AND document = :old"), {"new": json.dumps(widened, indent=2), "old": original})


def downgrade() -> None:
    op.drop_table("export_tasks")
