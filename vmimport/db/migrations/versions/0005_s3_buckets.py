"""S3 on the same endpoint: bucket owners and object ETags

Revision ID: 0005
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "s3_buckets",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_index("ix_s3_buckets_account_id", "s3_buckets", ["account_id"])
    op.create_table(
        "s3_objects",
        sa.Column("bucket", sa.String(length=63), nullable=False),
        sa.Column("key", sa.String(length=1024), nullable=False),
        sa.Column("etag", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("inode", sa.BigInteger(), nullable=False),
        sa.Column("mtime_ns", sa.BigInteger(), nullable=False),
        sa.Column("content_type", sa.String(length=255), nullable=True),
        sa.Column("user_metadata", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("bucket", "key"),
    )


def downgrade() -> None:
    op.drop_table("s3_objects")
    op.drop_index("ix_s3_buckets_account_id", table_name="s3_buckets")
    op.drop_table("s3_buckets")
