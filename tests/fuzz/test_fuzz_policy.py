"""Fuzz IAM policy documents as PutRolePolicy and CreateRole take them: JSON built from the
grammar's own words (Effect, Action, NotResource, Condition operators, wildcards) mixed with
junk and wrong types. A document is refused with ``PolicyError`` or parsed; a parsed one is
then evaluated (as the worker does before reading a bucket) and as a trust policy: neither may
raise. Bounded like the other fuzz targets: 200 derandomized examples, no deadlines."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmimport.service import policy

pytestmark = [pytest.mark.slow]

EXAMPLES = int(os.environ.get("VMIMPORT_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                derandomize=os.environ.get("VMIMPORT_FUZZ_RANDOM") != "1",
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

WORDS = st.sampled_from([
    "Version", "Statement", "Sid", "Effect", "Allow", "Deny", "Action", "NotAction", "Resource",
    "NotResource", "Principal", "NotPrincipal", "Service", "AWS", "Condition", "StringEquals",
    "StringLike", "StringNotEquals", "ArnLike", "ArnEquals", "IfExists", "StringEqualsIfExists",
    "ForAnyValue:StringEquals", "Bool", "Null", "sts:ExternalId", "sts:Externalid",
    "aws:SourceAccount", "aws:SourceArn", "s3:GetObject", "s3:*", "*", "?", "s3:Get*",
    "arn:aws:s3:::b/*", "arn:aws:s3:::*", "vmie.amazonaws.com", "vmimport", "", "\x00", "é"])
SCALARS = st.one_of(WORDS, st.text(max_size=20), st.integers(), st.booleans(), st.none(),
                    st.floats(allow_nan=True))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(WORDS, inner, max_size=5)), max_leaves=30)
STATEMENT = st.dictionaries(WORDS, VALUES, max_size=7)
# Statements that follow the grammar (so evaluation is reached), with odd values inside it.
PATTERNS = st.one_of(WORDS, st.lists(WORDS, max_size=3), VALUES)
CONDITION = st.dictionaries(WORDS, st.dictionaries(WORDS, PATTERNS, max_size=3), max_size=3)
WELL_FORMED = st.builds(
    lambda effect, what, action, where, resource, extra: {
        "Effect": effect, what: action, where: resource, **extra},
    st.sampled_from(["Allow", "Deny"]), st.sampled_from(["Action", "NotAction"]), PATTERNS,
    st.sampled_from(["Resource", "NotResource"]), PATTERNS,
    st.fixed_dictionaries({}, optional={"Condition": CONDITION, "Sid": SCALARS,
                                        "Principal": VALUES, "NotPrincipal": VALUES}))
DOCUMENT = st.one_of(
    st.fixed_dictionaries({"Version": st.just("2012-10-17"), "Statement": st.one_of(
        WELL_FORMED, st.lists(st.one_of(WELL_FORMED, STATEMENT), max_size=4))}),
    st.dictionaries(WORDS, VALUES, max_size=4), VALUES)
CONTEXT = {"sts:ExternalId": "vmimport", "aws:SourceAccount": "000000000000",
           "aws:SourceArn": "arn:aws:vmie:us-east-1:000000000000:import-task"}


@FUZZ
@given(DOCUMENT, st.booleans())
def test_policy_documents_parse_or_are_refused(document, trust):
    text = json.dumps(document)
    try:
        parsed = policy.parse(text, trust=trust)
    except policy.PolicyError:
        return
    if trust:
        decision = policy.trust_decision(parsed, "vmie.amazonaws.com", CONTEXT)
    else:
        decision = policy.evaluate([("p", parsed)], "s3:GetObject", "arn:aws:s3:::b/k", CONTEXT)
    assert isinstance(decision.allowed, bool) and decision.reason


@FUZZ
@given(st.binary(max_size=200))
def test_any_bytes_parse_or_are_refused(raw):
    try:
        policy.parse(raw.decode("utf-8", "replace"))
    except policy.PolicyError:
        pass
