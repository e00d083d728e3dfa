"""Alembic environment: runs on the connection handed over by ``Database.migrate``."""

from alembic import context
from sqlalchemy import create_engine

from vmimport.db.models import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # `alembic revision --autogenerate` run by a developer
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    connection = engine.connect()
context.configure(connection=connection, target_metadata=Base.metadata,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
