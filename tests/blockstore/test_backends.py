"""The block store is chosen in one place, from ``blocks_url``; nothing else builds one."""

from __future__ import annotations

import ast
import os
import re
import subprocess
from pathlib import Path

import pytest

from vmimport.blockstore.backends import BlockStoreUnavailable, open_block_store
from vmimport.blockstore.file_store import FileBlockStore
from vmimport.config import Settings

from ..helpers import BIN

PACKAGE = Path(__file__).resolve().parents[2] / "vmimport"


def test_default_is_the_data_dirs_blocks_and_file_urls_name_a_directory(tmp_path):
    store = open_block_store(Settings(data_dir=tmp_path))
    assert isinstance(store, FileBlockStore) and store.root == tmp_path / "blocks"
    assert (tmp_path / "blocks" / "packs").is_dir()
    store = open_block_store(Settings(data_dir=tmp_path, blocks_url=f"file://{tmp_path}/x%20y"))
    assert store.root == tmp_path / "x y" and store.location == str(tmp_path / "x y")


@pytest.mark.parametrize("url, words", [
    ("s3://vmimport-blocks/prod/", "object-store (s3://) block store is not available"),
    ("file://other-host/blocks", "absolute local path"),
    ("file:relative/blocks", "absolute local path"),
    ("ftp://host/blocks", "unknown scheme 'ftp'"),
])
def test_urls_it_cannot_open_are_refused_saying_why(tmp_path, url, words):
    with pytest.raises(BlockStoreUnavailable, match=re.escape(words)):
        open_block_store(Settings(data_dir=tmp_path, blocks_url=url))


def test_a_server_asked_for_an_s3_block_store_refuses_to_start(tmp_path):
    run = subprocess.run([str(BIN / "vmimport"), "migrate", "--data-dir", str(tmp_path)],
                         env={**os.environ, "VMIMPORT_BLOCKS_URL": "s3://blocks/prod/"},
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert "object-store (s3://) block store is not available" in run.stderr


def test_only_the_factory_builds_a_block_store():
    builders = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in (
                    "FileBlockStore", "BlockStore"):
                builders.append(str(path.relative_to(PACKAGE)))
    assert builders == ["blockstore/backends.py", "blockstore/backends.py"]
