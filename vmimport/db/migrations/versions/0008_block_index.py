"""The object-store block store's shared dedup index and the packs writes hold

Revision ID: 0008
Revises: 0007
"""
from alembic import op
import sqlalchemy as sa

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "block_packs",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=False, index=True),
    )
    op.create_table(
        "block_index",
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("pack", sa.String(32), sa.ForeignKey("block_packs.name", ondelete="CASCADE"),
                  nullable=False, index=True),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("length", sa.Integer(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("block_index")
    op.drop_table("block_packs")
