"""Shared by the tests of the formats' safety checks (`test_checks_*.py`)."""

from __future__ import annotations

import pytest

from vmimport.pipeline.errors import ImportFailure


def refused(check, *args) -> str:
    """The message `check(*args)` refuses with (the test fails if it accepts)."""
    with pytest.raises(ImportFailure) as caught:
        check(*args)
    return caught.value.message


def assert_policy_complete(module, tested: set[str], called_directly: set[str] = frozenset()):
    """Every `check_*` of `module` is tested, and listed in one of its `*_CHECKS` unless the
    reader calls it directly."""
    checks = {name for name, value in vars(module).items()
              if name.startswith("check_") and callable(value)}
    listed = {check.__name__ for name, value in vars(module).items()
              if name.endswith("_CHECKS") for check in value}
    assert checks - tested == set(), "checks without a test"
    assert checks - listed == set(called_directly), "checks in no list"
    assert listed <= checks
