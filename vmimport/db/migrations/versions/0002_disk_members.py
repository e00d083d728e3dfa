"""task_disks.member_index: one row per disk of a multi-disk container (OVA)

Revision ID: 0002
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("task_disks") as batch_op:
        batch_op.add_column(sa.Column("member_index", sa.Integer(), nullable=False,
                                      server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("task_disks") as batch_op:
        batch_op.drop_column("member_index")
