"""Fixtures of the API tests."""

from __future__ import annotations

import threading
import time

import pytest
import uvicorn

from vmimport.api.app import create_app
from vmimport.config import Settings
from vmimport.db.session import Database

from ..helpers import free_port


@pytest.fixture
def app_server(tmp_path):
    """Start ``create_app`` with the given settings on a loopback port, in a thread."""
    servers = []

    def start(**settings) -> str:
        port = free_port()
        config = Settings(data_dir=tmp_path, port=port, **settings)
        db = Database(f"sqlite:///{tmp_path / 'vmimport.db'}")
        server = uvicorn.Server(uvicorn.Config(create_app(config, db), host="127.0.0.1",
                                               port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread, db))
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "the app did not start"
            time.sleep(0.01)
        return f"http://127.0.0.1:{port}"

    yield start
    for server, thread, db in servers:
        server.should_exit = True
        thread.join(10)
        db.dispose()
