from __future__ import annotations

import pytest

from vmimport.config import Settings
from vmimport.db.session import Database
from vmimport.service.context import Context

ACCOUNT = "000000000000"


@pytest.fixture
def ctx(tmp_path):
    """A service context on a fresh SQLite database and block store in ``tmp_path``."""
    settings = Settings(data_dir=tmp_path)
    db = Database(settings.sqlalchemy_url)
    db.migrate()
    yield Context(account_id=ACCOUNT, region="us-east-1", db=db, settings=settings)
    db.dispose()
