"""Index the order Describe* pages are read in (account, creation time, id) for tasks, images
and snapshots: with the id in the index, a page of 100 is the next 100 index entries; without
it (or without any, for images and snapshots) the database sorted every row of the account.

Revision ID: 0013
Revises: 0012
"""
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_OLD = {"import_tasks": "ix_import_tasks_account_created",
        "export_tasks": "ix_export_tasks_account_created"}
_NEW = {"import_tasks": ("ix_import_tasks_account_created_id", "created_at"),
        "export_tasks": ("ix_export_tasks_account_created_id", "created_at"),
        "images": ("ix_images_account_created_id", "created_at"),
        "snapshots": ("ix_snapshots_account_started_id", "started_at")}


def upgrade() -> None:
    for table, (name, created) in _NEW.items():
        op.create_index(name, table, ["account_id", created, "id"])
    for table, name in _OLD.items():
        op.drop_index(name, table_name=table)


def downgrade() -> None:
    for table, name in _OLD.items():
        op.create_index(name, table, ["account_id", "created_at"])
    for table, (name, _) in _NEW.items():
        op.drop_index(name, table_name=table)
