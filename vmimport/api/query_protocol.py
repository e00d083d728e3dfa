"""The AWS Query protocol (IAM), driven by botocore's service model.

Requests: form fields ``Action=CreateRole&Version=2010-05-08&RoleName=r&Tags.member.1.Key=k``
become boto3-shaped input (lists are ``Name.member.N``, maps ``Name.entry.N.key/value``, unless
the model says flattened) — the inverse of botocore's ``QuerySerializer``.
Responses: ``<OpResponse xmlns=...><OpResult>...</OpResult><ResponseMetadata><RequestId>``
with lists as ``<member>`` items; errors ``<ErrorResponse><Error><Type/><Code/><Message/>
</Error><RequestId/></ErrorResponse>`` — what botocore's ``QueryParser`` reads back.
"""

from __future__ import annotations

import base64
from datetime import timezone

import botocore.model

from vmimport.service.errors import ApiError

from .scalars import BadValue, text_converter
from .text import xml_escape

_XML_DECL = '<?xml version="1.0" encoding="UTF-8"?>\n'


def _esc(text: str) -> str:
    return xml_escape(text).replace('"', "&quot;")


def _invalid(key: str, why: str) -> ApiError:
    return ApiError("ValidationError", f"Invalid value for parameter {key}: {why}")


# ---------------------------------------------------------------------------------------------
# Requests

def _wire(member_name: str, shape: botocore.model.Shape) -> str:
    return shape.serialization.get("name", member_name)


def _scalar(shape: botocore.model.Shape, value: str, key: str):
    try:
        return text_converter(shape)(value)
    except BadValue as bad:
        raise _invalid(key, bad.why) from None


def _build(shape: botocore.model.Shape, tree, key: str):
    """Convert the nested dict of key segments ``tree`` (leaves: strings) by ``shape``."""
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(tree, dict):
            raise _invalid(key, "is a structure and cannot take a value")
        out = {}
        names = {_wire(n, m): (n, m) for n, m in shape.members.items()}
        for seg, sub in tree.items():
            if seg not in names:
                raise ApiError("InvalidParameterValue" if key else "ValidationError",
                               f"The parameter {key + '.' if key else ''}{seg} is not "
                               "recognized")
            name, member = names[seg]
            out[name] = _build(member, sub, f"{key}.{seg}" if key else seg)
        for name in shape.required_members:
            if name not in out:
                raise ApiError("ValidationError", "1 validation error detected: Value null "
                               f"at '{name[0].lower() + name[1:]}' failed to satisfy "
                               "constraint: Member must not be null")
        return out
    if kind == "list":
        if tree == "":
            return []
        if not isinstance(tree, dict):
            raise _invalid(key, "is a list: use " + key + ".member.1, ...")
        items = tree
        if not shape.serialization.get("flattened"):
            items = tree.get(shape.member.serialization.get("name", "member"))
            if items is None or len(tree) != 1:
                raise _invalid(key, "is a list: use " + key + ".member.1, ...")
        return [_build(shape.member, items[i], f"{key}.member.{i}")
                for i in sorted(items, key=_index(key))]
    if kind == "map":
        entries = tree if shape.serialization.get("flattened") else (
            tree.get("entry") if isinstance(tree, dict) else None)
        if not isinstance(entries, dict):
            raise _invalid(key, "is a map: use " + key + ".entry.1.key/value")
        kname = shape.key.serialization.get("name", "key")
        vname = shape.value.serialization.get("name", "value")
        out = {}
        for i in sorted(entries, key=_index(key)):
            entry = entries[i]
            if not isinstance(entry, dict) or kname not in entry:
                raise _invalid(f"{key}.entry.{i}", "needs a key")
            out[_scalar(shape.key, entry[kname], f"{key}.entry.{i}.{kname}")] = \
                _build(shape.value, entry.get(vname, ""), f"{key}.entry.{i}.{vname}")
        return out
    if isinstance(tree, dict):
        raise _invalid(key, "takes a single value")
    return _scalar(shape, tree, key)


def _index(key: str):
    def sort_key(seg: str) -> int:
        if not (seg.isascii() and seg.isdigit()) or len(seg) > 9 or int(seg) == 0:
            raise _invalid(key, f"list index {seg!r} is not an integer from 1")
        return int(seg)
    return sort_key


def parse_query(operation: botocore.model.OperationModel, pairs: list[tuple[str, str]]) -> dict:
    """Form fields (without Action/Version/auth) -> boto3-shaped input."""
    tree: dict = {}
    for key, value in pairs:
        node = tree
        parts = key.split(".")
        for seg in parts[:-1]:
            nxt = node.setdefault(seg, {})
            if not isinstance(nxt, dict):
                raise _invalid(key, "conflicts with another parameter")
            node = nxt
        if parts[-1] in node:
            raise _invalid(key, "is given more than once")
        node[parts[-1]] = value
    if operation.input_shape is None:
        if tree:
            raise ApiError("ValidationError", f"{operation.name} takes no parameters")
        return {}
    return _build(operation.input_shape, tree, "")


# ---------------------------------------------------------------------------------------------
# Responses

def _format_scalar(shape: botocore.model.Shape, value) -> str:
    kind = shape.type_name
    if kind == "boolean":
        return "true" if value else "false"
    if kind == "timestamp":
        value = value.replace(tzinfo=timezone.utc) if value.tzinfo is None else \
            value.astimezone(timezone.utc)
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    if kind == "blob":
        return base64.b64encode(bytes(value)).decode("ascii")
    return _esc(str(value))


def _write(out: list[str], shape: botocore.model.Shape, value) -> None:
    kind = shape.type_name
    if kind == "structure":
        for name, item in value.items():
            member = shape.members.get(name)
            if member is None:
                raise ValueError(f"{shape.name} has no member {name!r}")  # a handler's typo
            if item is None:
                continue
            tag = _wire(name, member)
            if member.type_name == "list" and member.serialization.get("flattened"):
                for element in item:
                    out.append(f"<{tag}>")
                    _write(out, member.member, element)
                    out.append(f"</{tag}>")
                continue
            out.append(f"<{tag}>")
            _write(out, member, item)
            out.append(f"</{tag}>")
    elif kind == "list":
        tag = shape.member.serialization.get("name", "member")
        for element in value:
            out.append(f"<{tag}>")
            _write(out, shape.member, element)
            out.append(f"</{tag}>")
    elif kind == "map":
        for k, v in value.items():
            out.append("<entry><key>" + _esc(str(k)) + "</key><value>")
            _write(out, shape.value, v)
            out.append("</value></entry>")
    else:
        out.append(_format_scalar(shape, value))


def serialize_response(operation: botocore.model.OperationModel, result: dict,
                       request_id: str) -> bytes:
    namespace = operation.metadata["xmlNamespace"]
    out = [f'{_XML_DECL}<{operation.name}Response xmlns="{namespace}">']
    shape = operation.output_shape
    if shape is not None:
        wrapper = shape.serialization.get("resultWrapper", f"{operation.name}Result")
        out.append(f"<{wrapper}>")
        _write(out, shape, result)
        out.append(f"</{wrapper}>")
    out.append(f"<ResponseMetadata><RequestId>{_esc(request_id)}</RequestId>"
               f"</ResponseMetadata></{operation.name}Response>")
    return "".join(out).encode("utf-8")


def serialize_error(namespace: str, code: str, message: str, request_id: str,
                    sender: bool = True) -> bytes:
    kind = "Sender" if sender else "Receiver"
    return (f'{_XML_DECL}<ErrorResponse xmlns="{namespace}"><Error><Type>{kind}</Type>'
            f"<Code>{_esc(code)}</Code><Message>{_esc(message)}</Message></Error>"
            f"<RequestId>{_esc(request_id)}</RequestId></ErrorResponse>").encode("utf-8")
