"""Which block store a process uses: the one place a store is built, from ``blocks_url``.

``file:///path`` (or unset: ``<data_dir>/blocks``) is the local directory backend;
``s3://bucket/prefix/`` the object-store backend, on the endpoint and with the credentials of
the ``blocks_s3_*`` settings (not the source buckets' ``s3_*``: they are often other stores).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from .file_store import FileBlockStore
from .interface import BlockStore
from .manifest import BlockStoreError

if TYPE_CHECKING:
    from vmimport.config import Settings


class BlockStoreUnavailable(Exception):
    """``blocks_url`` names a store this server cannot open."""


def open_block_store(settings: "Settings", check: bool = False) -> BlockStore:
    """The store ``blocks_url`` names. ``check``: also make sure it can be reached (an object
    store's bucket exists and the credentials open it), else ``BlockStoreUnavailable``."""
    url = settings.blocks_url
    if not url:
        return FileBlockStore(settings.data_dir / "blocks")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise BlockStoreUnavailable(
                f"blocks_url {url!r}: a file URL names an absolute local path, "
                "file:///path/to/blocks")
        return FileBlockStore(Path(unquote(parts.path)))
    if scheme == "s3":
        return _object_store(settings, check)
    raise BlockStoreUnavailable(
        f"blocks_url {url!r}: unknown scheme {scheme or '(none)'!r}; use file:///path/to/blocks")


def _object_store(settings: "Settings", check: bool) -> BlockStore:
    # Imported here: boto3 costs a file-store process (the embedded default) nothing then.
    from .object_client import ObjectLocation, make_client
    from .object_store import ObjectBlockStore

    try:
        location = ObjectLocation.from_url(settings.blocks_url, settings.blocks_s3_endpoint_url)
    except ValueError as exc:
        raise BlockStoreUnavailable(str(exc)) from None
    client = make_client(settings.blocks_s3_endpoint_url, settings.blocks_s3_access_key,
                         settings.blocks_s3_secret_key, settings.blocks_s3_region)
    store = ObjectBlockStore(client, location, _shared_index(settings))
    if check:
        try:
            store.check()
        except BlockStoreError as exc:
            raise BlockStoreUnavailable(str(exc)) from None
    return store


def _shared_index(settings: "Settings"):
    """The dedup index and pack holds in the service's database (every machine's processes
    share it). One engine per process: ``open_block_store`` is called once per process."""
    from vmimport.db.session import Database

    from .shared_index import SharedDedupIndex

    return SharedDedupIndex(Database(settings.sqlalchemy_url))
