"""scripts/test runs the PostgreSQL half even when the SQLite half fails, and fails if either
did. The real script runs in a copy of the repository's layout whose setup, PostgreSQL and
pytest are small stand-ins recording what they were asked (a run of the real suite inside the
suite would take minutes)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(0o755)


@pytest.mark.parametrize("sqlite, postgres, status", [(0, 0, 0), (1, 0, 1), (0, 1, 1), (2, 5, 1)])
def test_both_halves_run_and_either_failure_fails(tmp_path, sqlite, postgres, status):
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "test", tmp_path / "scripts" / "test")
    log = tmp_path / "calls.log"
    _tool(tmp_path / "scripts" / "setup", "")
    _tool(tmp_path / "scripts" / "postgres", f'echo "postgres $*" >> {log}; '
                                             '[ "${2:-}" = stop ] || echo postgresql://pg/db\n')
    _tool(tmp_path / ".venv" / "bin" / "python",
          f'echo "pytest ${{VMIMPORT_TEST_POSTGRES_URL:-sqlite}} $*" >> {log}\n'
          f'if [ -n "${{VMIMPORT_TEST_POSTGRES_URL:-}}" ]; then exit {postgres}; fi; exit {sqlite}\n')
    proc = subprocess.run([str(tmp_path / "scripts" / "test"), "-q"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == status, proc.stdout + proc.stderr
    calls = log.read_text().splitlines()
    assert [c for c in calls if c.startswith("pytest")] == [
        "pytest sqlite -m pytest -q",
        "pytest postgresql://pg/db -m pytest tests/api tests/jobs -q"]
    assert calls[-1].startswith("postgres ") and calls[-1].endswith(" stop")  # cleaned up
