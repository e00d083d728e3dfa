"""The rest of an AMI's life: copy origins, deregistration protection, deprecation, launch and
create-volume permissions (sharing), and temporary credentials issued by STS

Revision ID: 0006
Revises: 0005
"""
from alembic import op
import sqlalchemy as sa

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("source_image_id", sa.String(32)))
        batch.add_column(sa.Column("source_region", sa.String(32)))
        batch.add_column(sa.Column("deregistration_protection", sa.String(32)))
        batch.add_column(sa.Column("protected_until", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("deprecation_time", sa.DateTime(timezone=True)))
    op.create_table(
        "launch_permissions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("image_id", sa.String(32), sa.ForeignKey("images.id", ondelete="CASCADE"),
                  nullable=False, index=True),
        sa.Column("user_id", sa.String(12), index=True),
        sa.Column("group_name", sa.String(8)),
        sa.UniqueConstraint("image_id", "user_id", "group_name"),
    )
    op.create_table(
        "create_volume_permissions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("snapshot_id", sa.String(32),
                  sa.ForeignKey("snapshots.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("user_id", sa.String(12), index=True),
        sa.Column("group_name", sa.String(8)),
        sa.UniqueConstraint("snapshot_id", "user_id", "group_name"),
    )
    op.create_table(
        "temporary_credentials",
        sa.Column("access_key_id", sa.String(32), primary_key=True),
        sa.Column("account_id", sa.String(12), nullable=False),
        sa.Column("sealed_secret", sa.LargeBinary(), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("source_access_key", sa.String(128)),
        sa.Column("role_id", sa.String(32)),
        sa.Column("role_arn", sa.String(600)),
        sa.Column("session_name", sa.String(64)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("temporary_credentials")
    op.drop_table("create_volume_permissions")
    op.drop_table("launch_permissions")
    with op.batch_alter_table("images") as batch:
        batch.drop_column("deprecation_time")
        batch.drop_column("protected_until")
        batch.drop_column("deregistration_protection")
        batch.drop_column("source_region")
        batch.drop_column("source_image_id")
