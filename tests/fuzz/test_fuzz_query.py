"""Fuzz the request parsers of the Query protocols: EC2's (``ec2_protocol.parse_query``) and
IAM's (``query_protocol.parse_query``). Keys walk the service model from an operation's input
(member names, list indices, ``member``/``entry``/``key``/``value``) with junk segments mixed
in; values are strings a client could send. The only acceptable outcomes are a parsed dict or
a refusal as ``ApiError`` with a 4xx status (which the API words as an EC2 or IAM error):
never another exception, which would be a 500.

Bounded like the header fuzzing: `EXAMPLES` (200) examples per target, derandomized, no
per-example deadline (a loaded machine must not fail the suite)."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmimport.api import ec2_protocol, query_protocol
from vmimport.api.models import service_model
from vmimport.service.errors import ApiError

pytestmark = [pytest.mark.slow]

EXAMPLES = int(os.environ.get("VMIMPORT_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                derandomize=os.environ.get("VMIMPORT_FUZZ_RANDOM") != "1",
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

EC2_OPERATIONS = ["ImportImage", "ImportSnapshot", "DescribeImages", "DescribeImportImageTasks",
                  "DescribeImportSnapshotTasks", "DescribeSnapshots", "DescribeTags",
                  "CreateTags", "DeleteTags", "ExportImage", "RegisterImage", "CopyImage",
                  "CancelImportTask", "DeregisterImage"]
IAM_OPERATIONS = ["CreateRole", "GetRole", "ListRoles", "PutRolePolicy", "GetRolePolicy",
                  "UpdateAssumeRolePolicy", "TagRole", "ListRolePolicies", "DeleteRole"]

INDEX = st.sampled_from(["1", "2", "3", "10", "0", "01", "-1", "1.5", "999999999",
                         "9999999999", "x", "", "١"])  # the last: a non-ASCII digit
JUNK = st.one_of(st.sampled_from(["member", "entry", "key", "value", "Value", "Values",
                                  "Filter", "Filters", "item", "", " ", "%2E", "\x00"]),
                 st.text(max_size=8))
VALUES = st.one_of(
    st.sampled_from(["", "true", "false", "TRUE", "1", "-1", "0", "2147483648",
                     "99999999999999999999", "1e309", "NaN", "Infinity", "1.5",
                     "2024-01-02T03:04:05Z", "2024-01-02", "1700000000", "AAAA", "====",
                     "raw", "x86_64", "arm64", "\x00", "\ud800"]),
    st.text(max_size=24))


def _member_names(name: str, shape) -> list[str]:
    """What a client may call a member on the wire (the parsers accept several)."""
    sz = shape.serialization
    names = {name, sz.get("queryName") or name, sz.get("name") or name}
    names |= {n[:1].upper() + n[1:] for n in list(names) if n}
    return sorted(names)


def _key(data, shape, *, query_lists: bool) -> str:
    """One key: a walk down ``shape`` with an optional junk segment now and then."""
    parts: list[str] = []
    for _ in range(7):
        if shape is None or data.draw(st.integers(0, 9)) == 0:
            parts.append(data.draw(JUNK))
            shape = None
        elif shape.type_name == "structure" and shape.members:
            name = data.draw(st.sampled_from(sorted(shape.members)))
            parts.append(data.draw(st.sampled_from(_member_names(name, shape.members[name]))))
            shape = shape.members[name]
        elif shape.type_name == "list":
            if query_lists and not shape.serialization.get("flattened"):
                parts.append(data.draw(st.sampled_from(["member", "member", "item"])))
            parts.append(data.draw(INDEX))
            shape = shape.member
        elif shape.type_name == "map":
            parts += ["entry", data.draw(INDEX), data.draw(st.sampled_from(["key", "value"]))]
            shape = shape.value
        else:
            break
        if data.draw(st.integers(0, 5)) == 0:  # stop early: a value where a list/struct is
            break
    return ".".join(parts)


def _pairs(data, operation, *, query_lists: bool) -> list[tuple[str, str]]:
    count = data.draw(st.integers(0, 12))
    pairs = [(_key(data, operation.input_shape, query_lists=query_lists), data.draw(VALUES))
             for _ in range(count)]
    if pairs and data.draw(st.booleans()):  # the same key twice
        pairs.append((pairs[0][0], data.draw(VALUES)))
    return pairs


def parsed_or_refused(parse, operation, pairs) -> None:
    """The property: a dict, or an ApiError the client is to blame for (4xx)."""
    try:
        parsed = parse(operation, pairs)
    except ApiError as exc:
        assert exc.code and exc.message and 400 <= exc.status < 500
        return
    assert isinstance(parsed, dict)


@FUZZ
@given(data=st.data(), name=st.sampled_from(EC2_OPERATIONS))
def test_ec2_parse_query(data, name):
    operation = ec2_protocol.ec2_model().operation_model(name)
    parsed_or_refused(ec2_protocol.parse_query, operation,
                      _pairs(data, operation, query_lists=False))


@FUZZ
@given(data=st.data(), name=st.sampled_from(IAM_OPERATIONS))
def test_iam_parse_query(data, name):
    operation = service_model("iam").operation_model(name)
    parsed_or_refused(query_protocol.parse_query, operation,
                      _pairs(data, operation, query_lists=True))


def test_the_walk_reaches_deep_members():
    """The key strategy must produce what boto3 sends, or the targets only test refusals."""
    @FUZZ
    @given(data=st.data())
    def collect(data):
        operation = ec2_protocol.ec2_model().operation_model("ImportImage")
        for key, value in _pairs(data, operation, query_lists=False):
            seen.add(key.count("."))
            try:
                ec2_protocol.parse_query(operation, [(key, value)])
                parsed.append(key)
            except ApiError:
                pass

    seen: set[int] = set()
    parsed: list[str] = []
    collect()
    # keys 3 deep and beyond are tried; members of list items (List.N.Member) really parse
    assert max(seen) >= 3 and max(k.count(".") for k in parsed) >= 2, parsed[:20]
