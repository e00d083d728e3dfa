"""Encrypted CopyImage runs as a job: the copied snapshot's source, and why an image failed;
deregistered AMIs remembered for a day (InvalidAMIID.Unavailable)

Revision ID: 0007
Revises: 0006
"""
from alembic import op
import sqlalchemy as sa

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("state_reason_code", sa.String(64)))
        batch.add_column(sa.Column("state_reason_message", sa.Text()))
    with op.batch_alter_table("snapshots") as batch:
        batch.add_column(sa.Column("source_snapshot_id", sa.String(32)))
    op.create_table(
        "deregistered_images",
        sa.Column("image_id", sa.String(32), primary_key=True),
        sa.Column("account_id", sa.String(12), nullable=False, index=True),
        sa.Column("deregistered_at", sa.DateTime(timezone=True), nullable=False, index=True),
    )


def downgrade() -> None:
    op.drop_table("deregistered_images")
    with op.batch_alter_table("snapshots") as batch:
        batch.drop_column("source_snapshot_id")
    with op.batch_alter_table("images") as batch:
        batch.drop_column("state_reason_message")
        batch.drop_column("state_reason_code")
