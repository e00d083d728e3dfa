"""What a service call needs to know about the caller and the server."""

from __future__ import annotations

from dataclasses import dataclass

from vmimport.config import Settings
from vmimport.db.session import Database


@dataclass
class Context:
    account_id: str
    region: str
    db: Database
    settings: Settings
