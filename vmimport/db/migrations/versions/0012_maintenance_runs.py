"""When a periodic maintenance (gc) last started and on which worker: the workers of every
machine take turns through it (setting gc_every_hours)

Revision ID: 0012
Revises: 0011
"""
from alembic import op
import sqlalchemy as sa

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "maintenance_runs",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("started_by", sa.String(128)))
    op.bulk_insert(table, [{"name": "gc", "started_at": None, "started_by": None}])


def downgrade() -> None:
    op.drop_table("maintenance_runs")
