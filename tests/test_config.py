"""Configuration: file < environment < flags, and the loopback rule for default credentials."""

from __future__ import annotations

import subprocess

import pytest

from vmimport.config import load_settings

from .helpers import BIN


def test_file_environment_and_flags(tmp_path, monkeypatch):
    config = tmp_path / "vmimport.toml"
    config.write_text('port = 9000\nregion = "eu-west-1"\nworkers = 7\n'
                      '[[credentials]]\naccess_key = "AK"\nsecret_key = "SK"\n'
                      'account_id = "123456789012"\n')
    monkeypatch.setenv("VMIMPORT_WORKERS", "3")
    settings = load_settings(config, port=9100)
    assert settings.port == 9100               # flag beats file
    assert settings.workers == 3               # environment beats file
    assert settings.region == "eu-west-1"      # file beats default
    assert [c.account_id for c in settings.credentials] == ["123456789012"]
    assert not settings.uses_default_credentials()


def test_default_credentials_refuse_public_address(tmp_path):
    settings = load_settings(host="0.0.0.0", data_dir=tmp_path)
    with pytest.raises(SystemExit, match="default credentials"):
        settings.check_listen_address()
    load_settings(host="127.0.0.1").check_listen_address()
    load_settings(host="::1").check_listen_address()
    proc = subprocess.run([str(BIN / "vmimport"), "serve", "--host", "0.0.0.0", "--data-dir",
                           str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "refusing to listen on 0.0.0.0" in proc.stderr


def test_own_credentials_may_listen_anywhere(monkeypatch):
    monkeypatch.setenv("VMIMPORT_CREDENTIALS",
                       '[{"access_key": "AK", "secret_key": "SK", "account_id": "123456789012"}]')
    load_settings(host="0.0.0.0").check_listen_address()
