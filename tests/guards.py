"""A guard for the "never reads a file outside what the user supplied" rule: while active, any
builtins.open / os.open of a path outside ``root`` fails loudly and is recorded."""

from __future__ import annotations

import builtins
import os


def forbid_opening_outside(root, monkeypatch) -> list[str]:
    """Install the guard now; returns the list of refused paths."""
    opened, install = opening_guard(root, monkeypatch)
    install()
    return opened


def opening_guard(root, monkeypatch):
    """(refused paths, install): for tests that must build their input before the guard."""
    opened: list[str] = []
    real_open, real_os_open = builtins.open, os.open
    root = str(root)

    def guard(path):
        if isinstance(path, (str, bytes, os.PathLike)):
            p = os.path.abspath(os.fsdecode(path))
            if not p.startswith(root):
                opened.append(p)
                raise PermissionError(f"the test forbids opening {p}")

    def guarded_open(file, *args, **kwargs):
        guard(file)
        return real_open(file, *args, **kwargs)

    def guarded_os_open(path, *args, **kwargs):
        guard(path)
        return real_os_open(path, *args, **kwargs)

    def install():
        monkeypatch.setattr(builtins, "open", guarded_open)
        monkeypatch.setattr(os, "open", guarded_os_open)

    return opened, install
