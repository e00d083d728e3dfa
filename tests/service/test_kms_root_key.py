"""Where the KMS root key comes from: configuration, a file, or generated owner-only."""

import base64
import os
import stat

import pytest

from vmimport.config import Settings
from vmimport.service import kms


def test_generated_owner_only_and_stable(tmp_path):
    settings = Settings(data_dir=tmp_path)
    key = kms.root_key(settings)
    path = tmp_path / "kms-root.key"
    assert len(key) == 32 and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    kms._root_cache.clear()
    assert kms.root_key(settings) == key


def test_configured_value_and_file(tmp_path):
    raw = os.urandom(32)
    assert kms.root_key(Settings(data_dir=tmp_path,
                                 kms_root_key=base64.b64encode(raw).decode())) == raw
    (tmp_path / "rk").write_bytes(raw)
    assert kms.root_key(Settings(data_dir=tmp_path, kms_root_key_file=tmp_path / "rk")) == raw
    assert not (tmp_path / "kms-root.key").exists()
    with pytest.raises(RuntimeError):
        kms.root_key(Settings(data_dir=tmp_path, kms_root_key="c2hvcnQ="))
    with pytest.raises(RuntimeError):
        kms.root_key(Settings(data_dir=tmp_path, kms_root_key_file=tmp_path / "missing"))
