"""What a service call needs to know about the caller and the server."""

from __future__ import annotations

from dataclasses import dataclass

from vmimport.blockstore.backends import open_block_store
from vmimport.blockstore.interface import BlockStore
from vmimport.config import Settings
from vmimport.db.session import Database


@dataclass
class Context:
    account_id: str
    region: str
    db: Database
    settings: Settings
    # The block store the settings name; opened here unless the caller holds one already.
    blocks: BlockStore | None = None

    def __post_init__(self) -> None:
        if self.blocks is None:
            self.blocks = open_block_store(self.settings)
