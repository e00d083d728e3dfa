"""What an import went through, for its detail: the phases it passed (with times) and what
inspection found on its boot volume (partitions, filesystems, OS, findings)

Revision ID: 0010
Revises: 0009
"""
from alembic import op
import sqlalchemy as sa

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("import_tasks") as batch:
        batch.add_column(sa.Column("phases", sa.JSON()))
        batch.add_column(sa.Column("inspection", sa.JSON()))


def downgrade() -> None:
    with op.batch_alter_table("import_tasks") as batch:
        batch.drop_column("inspection")
        batch.drop_column("phases")
