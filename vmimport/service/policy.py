"""IAM policy documents: parsing, and evaluation with IAM's semantics.

- A request is allowed only if some statement allows it and no statement denies it (an
  explicit Deny always wins; with neither, it is implicitly denied).
- ``Action``/``NotAction`` match case-insensitively, ``Resource``/``NotResource``
  case-sensitively; both take ``*`` (any run of characters) and ``?`` (one character).
- ``Condition`` operators: String[Not]Equals[IgnoreCase], String[Not]Like, Arn[Not]Equals,
  Arn[Not]Like, Bool, Null, each optionally ``...IfExists``; condition keys are
  case-insensitive. A key missing from the request context fails a positive operator (and
  satisfies a negated one), as on IAM. An operator we do not know makes its statement not apply.
- Trust policies: ``Principal`` ``*``, ``{"Service": ...}`` or ``{"AWS": ...}``.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass


class PolicyError(ValueError):
    """The document is not a policy (MalformedPolicyDocument)."""


def parse(document: str, *, trust: bool = False) -> dict:
    """The policy as a dict, checked for the structure IAM insists on."""
    try:
        policy = json.loads(document)
    except ValueError as exc:
        raise PolicyError(f"the document is not valid JSON ({exc})") from None
    if not isinstance(policy, dict):
        raise PolicyError("the document must be a JSON object")
    statements = policy.get("Statement")
    if statements is None:
        raise PolicyError("the policy has no Statement")
    for n, st in enumerate(_as_list(statements), 1):
        if not isinstance(st, dict):
            raise PolicyError(f"statement {n} is not an object")
        if st.get("Effect") not in ("Allow", "Deny"):
            raise PolicyError(f"statement {n}: Effect must be Allow or Deny")
        if ("Action" in st) == ("NotAction" in st):
            raise PolicyError(f"statement {n}: give exactly one of Action and NotAction")
        if trust:
            if "Principal" not in st and "NotPrincipal" not in st:
                raise PolicyError(f"statement {n}: a trust policy statement needs a Principal")
        else:
            if "Principal" in st or "NotPrincipal" in st:
                raise PolicyError("Policy document should not specify a principal.")
            if ("Resource" in st) == ("NotResource" in st):
                raise PolicyError(f"statement {n}: give exactly one of Resource and "
                                  "NotResource")
        if "Condition" in st and not isinstance(st["Condition"], dict):
            raise PolicyError(f"statement {n}: Condition must be an object")
    return policy


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


@functools.lru_cache(maxsize=4096)
def _glob(pattern: str, ignore_case: bool) -> re.Pattern:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(regex + r"\Z", re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def matches(pattern: str, value: str, ignore_case: bool = False) -> bool:
    return isinstance(pattern, str) and bool(_glob(pattern, ignore_case).match(value))


def _any(patterns, value: str, ignore_case: bool) -> bool:
    return any(matches(p, value, ignore_case) for p in _as_list(patterns))


def _condition_holds(operator: str, block: dict, context: dict[str, str]) -> bool:
    if not isinstance(block, dict):
        return False
    if_exists = operator.endswith("IfExists")
    op = operator[:-len("IfExists")] if if_exists else operator
    lowered = {k.lower(): v for k, v in context.items()}
    for key, wanted in block.items():
        wanted = [str(w) if not isinstance(w, str) else w for w in _as_list(wanted)]
        actual = lowered.get(key.lower())
        if op == "Null":
            is_null = actual is None
            if not any((w.lower() == "true") == is_null for w in wanted):
                return False
            continue
        negated = "Not" in op
        if actual is None:
            if if_exists or negated:
                continue
            return False
        if op in ("StringEquals", "StringNotEquals", "ArnEquals", "ArnNotEquals"):
            hit = actual in wanted
        elif op in ("StringEqualsIgnoreCase", "StringNotEqualsIgnoreCase"):
            hit = actual.lower() in (w.lower() for w in wanted)
        elif op in ("StringLike", "StringNotLike", "ArnLike", "ArnNotLike"):
            hit = any(matches(w, actual) for w in wanted)
        elif op == "Bool":
            hit = actual.lower() in (w.lower() for w in wanted)
        else:
            return False  # an operator we do not evaluate: the statement does not apply
        if hit == negated:
            return False
    return True


def conditions_hold(statement: dict, context: dict[str, str]) -> bool:
    return all(_condition_holds(op, block, context)
               for op, block in (statement.get("Condition") or {}).items())


def _action_applies(st: dict, action: str) -> bool:
    if "Action" in st:
        return _any(st["Action"], action, True)
    return not _any(st.get("NotAction", []), action, True)


def _resource_applies(st: dict, resource: str) -> bool:
    if "Resource" in st:
        return _any(st["Resource"], resource, False)
    if "NotResource" in st:
        return not _any(st["NotResource"], resource, False)
    return True  # trust policies: the resource is the role itself


@dataclass
class Decision:
    allowed: bool
    reason: str   # for messages: which statement decided, or that none allowed it


def evaluate(policies: list[tuple[str, dict]], action: str, resource: str,
             context: dict[str, str] | None = None) -> Decision:
    """Whether ``action`` on ``resource`` is allowed by the named policies ``(name, doc)``."""
    context = context or {}
    allowed_by = None
    for name, policy in policies:
        for n, st in enumerate(_as_list(policy.get("Statement", [])), 1):
            if not (_action_applies(st, action) and _resource_applies(st, resource)
                    and conditions_hold(st, context)):
                continue
            where = f"policy '{name}' statement {st.get('Sid') or n}"
            if st.get("Effect") == "Deny":
                return Decision(False, f"explicitly denied by {where}")
            allowed_by = allowed_by or where
    if allowed_by:
        return Decision(True, f"allowed by {allowed_by}")
    return Decision(False, "no statement of the role's policies allows it")


def _principal_matches(principal, service: str, aws_ids: frozenset[str]) -> bool:
    if principal == "*":
        return True
    if not isinstance(principal, dict):
        return False
    aws = _as_list(principal.get("AWS", []))
    if aws == ["*"] or any(isinstance(p, str) and p in aws_ids for p in aws):
        return True
    return any(isinstance(p, str) and p.lower() == service.lower()
               for p in _as_list(principal.get("Service", [])))


def aws_principal_ids(account_id: str, *arns: str | None) -> frozenset[str]:
    """What an ``{"AWS": ...}`` principal may name to mean this caller: its account (as the
    bare id or the root ARN: the account delegates to its own keys) or the caller's ARNs."""
    return frozenset({account_id, f"arn:aws:iam::{account_id}:root", *filter(None, arns)})


def trust_decision(policy: dict, service: str, context: dict[str, str],
                   action: str = "sts:AssumeRole",
                   aws_ids: frozenset[str] = frozenset()) -> Decision:
    """Whether the trust policy lets ``service`` (``vmie.amazonaws.com``) — or, with
    ``aws_ids`` (``aws_principal_ids``), the account principal ``service`` names — assume
    the role."""
    allowed, named_without_conditions = False, False
    for n, st in enumerate(_as_list(policy.get("Statement", [])), 1):
        if not _action_applies(st, action):
            continue
        if "Principal" in st and not _principal_matches(st["Principal"], service, aws_ids):
            continue
        if "NotPrincipal" in st and _principal_matches(st["NotPrincipal"], service, aws_ids):
            continue
        if not conditions_hold(st, context):
            named_without_conditions = True
            continue
        if st.get("Effect") == "Deny":
            return Decision(False, f"its trust policy denies {service} {action} "
                            f"(statement {st.get('Sid') or n})")
        allowed = True
    if allowed:
        return Decision(True, "trusted")
    if named_without_conditions:
        shown = ", ".join(f"{k}={v}" for k, v in context.items())
        return Decision(False, f"its trust policy names {service} but its Condition is not met "
                        f"(the service presents {shown})")
    return Decision(False, f"its trust policy does not allow {service} to {action}")
