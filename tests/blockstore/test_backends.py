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
from vmimport.blockstore.object_store import ObjectBlockStore
from vmimport.config import Settings

from ..helpers import BIN, free_port

PACKAGE = Path(__file__).resolve().parents[2] / "vmimport"


def test_default_is_the_data_dirs_blocks_and_file_urls_name_a_directory(tmp_path):
    store = open_block_store(Settings(data_dir=tmp_path))
    assert isinstance(store, FileBlockStore) and store.root == tmp_path / "blocks"
    assert (tmp_path / "blocks" / "packs").is_dir()
    store = open_block_store(Settings(data_dir=tmp_path, blocks_url=f"file://{tmp_path}/x%20y"))
    assert store.root == tmp_path / "x y" and store.location == str(tmp_path / "x y")


def test_s3_urls_name_a_bucket_and_prefix_on_the_blocks_endpoint(tmp_path):
    store = open_block_store(Settings(data_dir=tmp_path, blocks_url="s3://vmimport-blocks/prod",
                                      blocks_s3_endpoint_url="http://u:p@127.0.0.1:9/",
                                      blocks_s3_access_key="AK", blocks_s3_secret_key="SK"))
    assert isinstance(store, ObjectBlockStore)
    assert store.location == "s3://vmimport-blocks/prod/ at http://127.0.0.1:9/"  # no secrets


@pytest.mark.parametrize("url, words", [
    ("s3:///prefix/", "an s3 URL names a bucket"),
    ("file://other-host/blocks", "absolute local path"),
    ("file:relative/blocks", "absolute local path"),
    ("ftp://host/blocks", "unknown scheme 'ftp'"),
])
def test_urls_it_cannot_open_are_refused_saying_why(tmp_path, url, words):
    with pytest.raises(BlockStoreUnavailable, match=re.escape(words)):
        open_block_store(Settings(data_dir=tmp_path, blocks_url=url))


def test_a_server_whose_s3_block_store_cannot_be_reached_refuses_to_start(tmp_path):
    port = free_port()  # nothing listens there
    run = subprocess.run([str(BIN / "vmimport"), "migrate", "--data-dir", str(tmp_path)],
                         env={**os.environ, "VMIMPORT_BLOCKS_URL": "s3://blocks/prod/",
                              "VMIMPORT_BLOCKS_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}",
                              "VMIMPORT_BLOCKS_S3_ACCESS_KEY": "AK",
                              "VMIMPORT_BLOCKS_S3_SECRET_KEY": "secret-never-shown"},
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert (f"the block store s3://blocks/prod/ at http://127.0.0.1:{port}: opening the bucket "
            "failed") in run.stderr
    assert "secret-never-shown" not in run.stderr


def test_only_the_factory_builds_a_block_store():
    builders = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in (
                    "FileBlockStore", "ObjectBlockStore", "BlockStore"):
                builders.append(str(path.relative_to(PACKAGE)))
    assert builders == ["blockstore/backends.py"] * 3
