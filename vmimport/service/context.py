"""What a service call needs to know about the caller and the server."""

from __future__ import annotations

from dataclasses import dataclass

from vmimport.blockstore.backends import open_block_store
from vmimport.blockstore.interface import BlockStore
from vmimport.config import Settings
from vmimport.db.session import Database

from .dry_run import DryRunDatabase, dry_run_operation


@dataclass(frozen=True)
class Principal:
    """Who signed a request: a configured (long-term) key acting for its account, or
    temporary credentials issued by STS — a session of such a key (GetSessionToken) or of an
    assumed role (AssumeRole)."""

    access_key: str
    account_id: str
    arn: str             # what GetCallerIdentity answers, and what policies and messages name
    user_id: str
    # The configured key whose rights apply (itself, or the one a session was made from).
    source_access_key: str | None = None
    role_id: str | None = None     # an assumed role: its inline policies decide
    role_arn: str | None = None
    temporary: bool = False


def key_principal(access_key: str, account_id: str) -> Principal:
    """A configured key acts as its account (there are no IAM users here)."""
    return Principal(access_key, account_id, f"arn:aws:iam::{account_id}:root", account_id,
                     source_access_key=access_key)


@dataclass
class Context:
    account_id: str
    region: str
    db: Database
    settings: Settings
    # The block store the settings name; opened here unless the caller holds one already.
    blocks: BlockStore | None = None
    # Who is calling (the front door always says; service code called directly may not).
    caller: Principal | None = None
    # EC2's DryRun: every check runs, no change is made (``dry_run.py``).
    dry_run: bool = False

    def __post_init__(self) -> None:
        if self.blocks is None:
            self.blocks = open_block_store(self.settings)
        if self.dry_run:
            self.db = DryRunDatabase(self.db)

    def would_succeed(self) -> None:
        """Where a handler's checks are done and its effects begin outside a transaction:
        a DryRun call answers here."""
        if self.dry_run:
            raise dry_run_operation()
