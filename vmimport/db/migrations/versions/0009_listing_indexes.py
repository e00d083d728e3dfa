"""Index the foreign keys Describe* calls load children by (task_disks.task_id,
block_device_mappings.image_id): without them each DescribeImportImageTasks or DescribeImages
scanned the whole child table, a cost that grew with every task and image ever kept.

Revision ID: 0009
Revises: 0008
"""
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_task_disks_task_id", "task_disks", ["task_id"])
    op.create_index("ix_block_device_mappings_image_id", "block_device_mappings", ["image_id"])


def downgrade() -> None:
    op.drop_index("ix_block_device_mappings_image_id", table_name="block_device_mappings")
    op.drop_index("ix_task_disks_task_id", table_name="task_disks")
