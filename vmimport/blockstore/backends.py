"""Which block store a process uses: the one place a store is built, from ``blocks_url``.

``file:///path`` (or unset: ``<data_dir>/blocks``) is the local directory backend. ``s3://``
is reserved for the object-store backend, which does not exist yet: asking for it is refused at
start, saying so, rather than storing the blocks somewhere the user did not ask for.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from .file_store import FileBlockStore
from .interface import BlockStore

if TYPE_CHECKING:
    from vmimport.config import Settings


class BlockStoreUnavailable(Exception):
    """``blocks_url`` names a store this server cannot open."""


def open_block_store(settings: "Settings") -> BlockStore:
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
        raise BlockStoreUnavailable(
            f"blocks_url {url!r}: the object-store (s3://) block store is not available in "
            "this version yet; use file:///path/to/blocks, or leave blocks_url unset for "
            "<data_dir>/blocks")
    raise BlockStoreUnavailable(
        f"blocks_url {url!r}: unknown scheme {scheme or '(none)'!r}; use file:///path/to/blocks")
