"""Describe* filters: EC2's wildcard semantics, EC2's bounds (checked before any work), and
the cost of matching: per item, not per item and value."""

from __future__ import annotations

import re
import sys
from types import SimpleNamespace

import pytest

from vmimport.service.errors import ApiError
from vmimport.service.globs import FilterValues, GlobSet
from vmimport.service.listing import check_bounds, filter_items


def _wildcard_regex(pattern: str) -> re.Pattern:
    """The reference semantics (the translation to a regex vmimport used before)."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if c == "*" else "." if c == "?" else re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z", re.S)


@pytest.mark.parametrize("pattern, value, hit", [
    ("ubuntu-*", "ubuntu-22.04", True), ("ubuntu-*", "debian-12", False),
    ("a?c", "abc", True), ("a?c", "ac", False), ("*", "", True), ("", "", True),
    ("", "x", False), (r"a\*", "a*", True), (r"a\*", "ab", False), ("a\\", "a\\", True),
    (r"\\*", "\\xyz", True), ("*a*a*a*b", "a" * 200, False), ("*a*a*a*b", "a" * 200 + "b", True),
    ("x*y*z", "x\ny\nz", True), ("a**b", "ab", True), ("?*", "", False),
])
def test_wildcards(pattern, value, hit):
    assert GlobSet([pattern]).match(value) is hit
    assert FilterValues([pattern]).matches([value]) is hit
    assert bool(_wildcard_regex(pattern).match(value)) is hit


def test_agrees_with_the_regex_semantics_on_random_patterns():
    import random

    rng = random.Random(16)
    for _ in range(3000):
        patterns = ["".join(rng.choice("ab*?\\") for _ in range(rng.randint(0, 6)))
                    for _ in range(rng.randint(1, 4))]
        value = "".join(rng.choice("ab*?\\") for _ in range(rng.randint(0, 7)))
        want = any(_wildcard_regex(p).match(value) for p in patterns)
        assert FilterValues(patterns).matches([value]) is want, (patterns, value)


def test_values_without_wildcards_are_a_set_lookup():
    values = FilterValues([f"ami-{n:017x}" for n in range(200)])
    assert values.globs is None and len(values.exact) == 200
    assert values.matches([None, f"ami-{7:017x}"]) and not values.matches(["ami-x"])


def _filters(*values_per_filter):
    return {"Filters": [{"Name": f"name{n}", "Values": list(v)}
                        for n, v in enumerate(values_per_filter)]}


def _refused(params) -> ApiError:
    with pytest.raises(ApiError) as err:
        check_bounds(params)
    return err.value


def test_bounds_as_ec2_sets_them():
    assert len(check_bounds(_filters(["a"] * 200))) == 1
    assert len(check_bounds(_filters(["a"] * 100, ["b*"] * 100))) == 2
    for params in (_filters(["a"] * 201), _filters(["a"] * 150, ["b"] * 51)):
        err = _refused(params)
        assert (err.code, err.status) == ("FilterLimitExceeded", 400)
        assert err.message == "The maximum number of filter values specified on a single call is 200"
    check_bounds(_filters(["x" * 255]))
    err = _refused(_filters(["x" * 256]))
    assert err.code == "FilterLimitExceeded" and "255 characters" in err.message
    check_bounds({"ImageIds": ["ami-1"] * 1000})
    err = _refused({"ImageIds": ["ami-1"] * 1001})
    assert err.code == "InvalidParameterValue" and "ImageIds" in err.message
    assert _refused({"Filters": [{"Name": "a", "Values": []}]}).code == "InvalidParameterValue"


def _profiled_calls(fn) -> int:
    """Python and C function calls made while ``fn`` runs: a count of work, not of time."""
    calls = 0

    def count(frame, event, arg):
        nonlocal calls
        if event in ("call", "c_call"):
            calls += 1

    sys.setprofile(count)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return calls


def test_matching_work_does_not_grow_with_the_number_of_values():
    """Before, each item was tested against each value (a cached regex per value, 512 cached:
    20,000 values took 32 s on one call); now each filter is prepared once per call and an
    item costs one lookup. 2,000 items against 200 values must cost about what they cost
    against one value, plus preparing the 199 more values once."""
    items = [SimpleNamespace(name=f"image-{n}") for n in range(2000)]

    def attributes(item, name):
        return [item.name]

    def run(values):
        def call():
            kept = filter_items(items, check_bounds(_filters(values)), attributes)
            assert len(kept) == 1
        return _profiled_calls(call)

    for one_value, others in ((["*-17"], [f"*-{n}x?" for n in range(199)]),  # the automaton
                              (["image-17"], [f"image-{n}x" for n in range(199)])):  # a set
        one = run(one_value)
        many = run(others + one_value)
        assert many < one + 199 * 50, (one, many)


def test_a_thousand_unknown_ids_are_named_ten_and_counted():
    from vmimport.service.errors import not_found
    error = not_found("InvalidAMIID.NotFound", [f"ami-{i:017x}" for i in range(1000)])
    assert error.message.count("ami-") == 10 and "and 990 more" in error.message
    assert len(error.message) < 400
    assert "'[ami-00000000000000000]'" in not_found("InvalidAMIID.NotFound",
                                                    "ami-00000000000000000").message
