"""Scalars that arrive as text (Query form fields, REST labels, query strings and headers),
converted by their model shape with the model's checks; one converter serves every protocol,
which words a ``BadValue`` in its own error vocabulary."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime, timezone
from typing import Any, Callable

import botocore.model

from .text import forbidden_character

_INT_RE = re.compile(r"-?[0-9]{1,30}\Z")  # also keeps int() away from huge strings
_FLOAT_RE = re.compile(r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?\Z|[-+]?(Infinity|NaN)\Z")
_EPOCH_RE = re.compile(r"-?[0-9]{1,30}(\.[0-9]+)?\Z")


class BadValue(ValueError):
    """A value its shape refuses; ``why`` completes "Invalid value ... for <parameter>: "."""

    def __init__(self, why: str):
        super().__init__(why)
        self.why = why


def check_text(value: str) -> str:
    why = forbidden_character(value)
    if why:
        raise BadValue(why)
    return value


def _check_range(shape: botocore.model.Shape, n, what: str) -> None:
    lo, hi = shape.metadata.get("min"), shape.metadata.get("max")
    if lo is not None and n < lo:
        raise BadValue(f"{what} must be at least {lo}")
    if hi is not None and n > hi:
        raise BadValue(f"{what} must be at most {hi}")


def parse_timestamp(value: str) -> datetime:
    try:
        if _EPOCH_RE.match(value):
            return datetime.fromtimestamp(float(value), timezone.utc)
        ts = datetime.fromisoformat(value)  # 3.11: accepts 'Z', offsets and any fraction length
    except (ValueError, OverflowError, OSError):
        raise BadValue("not an ISO-8601 timestamp or epoch seconds") from None
    return ts.replace(tzinfo=timezone.utc) if ts.tzinfo is None else ts.astimezone(timezone.utc)


def _string(shape):
    enum = frozenset(shape.enum)
    has_range = "min" in shape.metadata or "max" in shape.metadata

    def convert(value: str):
        if enum and value not in enum:
            raise BadValue("must be one of " + ", ".join(shape.enum))
        if has_range:
            _check_range(shape, len(value), "length")
        return check_text(value)
    return convert


def _number(pattern: re.Pattern, cast, what: str):
    def for_shape(shape):
        def convert(value: str):
            if not pattern.match(value):
                raise BadValue(f"not {what}")
            n = cast(value)
            _check_range(shape, n, "value")
            return n
        return convert
    return for_shape


_integer = _number(_INT_RE, int, "an integer")
_double = _number(_FLOAT_RE, float, "a number")


def _boolean(shape):
    def convert(value: str):
        low = value.lower()
        if low not in ("true", "false"):
            raise BadValue("must be true or false")
        return low == "true"
    return convert


def _blob(shape):
    def convert(value: str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise BadValue("not valid base64") from None
    return convert


_KINDS = {"string": _string, "integer": _integer, "long": _integer, "double": _double,
          "float": _double, "boolean": _boolean, "blob": _blob,
          "timestamp": lambda shape: parse_timestamp}


def text_converter(shape: botocore.model.Shape) -> Callable[[str], Any]:
    """``convert(text)`` for a scalar shape; raises ``BadValue``, and TypeError for a shape that
    is not a scalar (a model the caller did not expect)."""
    kind = _KINDS.get(shape.type_name)
    if kind is None:
        raise TypeError(f"{shape.name} ({shape.type_name}) is not a scalar")
    return kind(shape)
