"""The EC2 Query protocol, driven by botocore's EC2 service model.

Requests: form fields such as ``DiskContainer.1.UserBucket.S3Bucket=b`` become boto3-shaped input
(``{"DiskContainers": [{"UserBucket": {"S3Bucket": "b"}}]}``); this is the exact inverse of
botocore's ``EC2Serializer``, so anything boto3 or the AWS CLI sends parses by construction.
Responses: boto3-shaped output becomes the XML that botocore's ``EC2QueryParser`` reads back.
Nothing here names a parameter or an element; every name comes from the model.
"""

from __future__ import annotations

import base64
import functools
from datetime import datetime, timezone
from typing import Callable

import botocore.model

from vmimport.service.errors import ApiError

from .models import service_model
from .scalars import BadValue, text_converter
from .text import xml_escape as _esc


def ec2_model() -> botocore.model.ServiceModel:
    return service_model("ec2")


# ---------------------------------------------------------------------------------------------
# Requests

_MAX_INDEX_DIGITS = 9  # EC2 lists are far shorter; also keeps int() away from huge strings
# Lists without a maximum in the model (ImageIds, Filter.N.Value, ...) are bounded here, before
# any work: EC2 itself caps them (200 values a filter; ids in the low thousands).
MAX_LIST_ITEMS = 1000


def _show(value: str) -> str:
    return value if len(value) <= 64 else value[:61] + "..."


def _scalar_converter(shape: botocore.model.Shape):
    """Return ``convert(value, key)`` for a scalar shape, with the model's checks built in."""
    if shape.type_name not in ("string", "integer", "long", "double", "float", "boolean",
                               "timestamp", "blob"):
        # EC2 inputs have no maps or documents (checked against the model)
        raise TypeError(f"EC2 query input of type {shape.type_name} ({shape.name}) is not handled")
    convert_text = text_converter(shape)

    def convert(value: str, key: str):
        try:
            return convert_text(value)
        except BadValue as bad:
            raise ApiError("InvalidParameterValue",
                                f"Invalid value '{_show(value)}' for {key}: {bad.why}") from None
    return convert


def _alternatives(wire: str, member_name: str, is_list: bool) -> list[str]:
    """Names other SDKs send for the same member: the boto3 name and, for lists, the
    singular/plural twin (``Filter``/``Filters``, ``ImportTaskId``/``ImportTaskIds``)."""
    names = [wire, member_name]
    if is_list:
        for n in (wire, member_name):
            names.append(n[:-1] if n.endswith("s") else n + "s")
    return names


class _Node:
    """Per-shape lookup table, built once per shape name (shared by every operation)."""

    __slots__ = ("shape", "kind", "convert", "_members", "wire_names", "member", "required")

    def __init__(self, shape: botocore.model.Shape):
        self.shape = shape
        self.kind = shape.type_name if shape.type_name in ("structure", "list") else "scalar"
        self.convert = _scalar_converter(shape) if self.kind == "scalar" else None
        self._members = None  # built lazily: the EC2 model has recursive shapes
        self.wire_names: dict[str, str] = {}
        self.member = None
        self.required = tuple(shape.required_members) if self.kind == "structure" else ()

    @property
    def members(self) -> dict[str, tuple[str, "_Node"]]:
        if self._members is None:
            table: dict[str, tuple[str, _Node]] = {}
            alternatives = []
            for name, mshape in self.shape.members.items():
                sz = mshape.serialization
                wire = sz.get("queryName") or (sz["name"][0].upper() + sz["name"][1:] if sz.get("name") else name)
                table[wire] = (name, _node(mshape))
                self.wire_names[name] = wire
                alternatives += [(alt, name, mshape) for alt in _alternatives(wire, name, mshape.type_name == "list")]
            for alt, name, mshape in alternatives:  # an alternative never shadows a real name
                table.setdefault(alt, (name, _node(mshape)))
            self._members = table
        return self._members


_NODES: dict[str, _Node] = {}  # by shape name: EC2 shape names are unique within its model


def _node(shape: botocore.model.Shape) -> _Node:
    node = _NODES.get(shape.name)
    if node is None:
        node = _NODES[shape.name] = _Node(shape)
        if node.kind == "list":
            node.member = _node(shape.member)
    return node


def parse_query(operation: botocore.model.OperationModel, params: list[tuple[str, str]]) -> dict:
    """Decode EC2 query parameters (minus Action/Version/auth) into boto3-shaped input."""
    if operation.input_shape is None:
        if params:
            raise ApiError("UnknownParameter", f"The parameter {params[0][0]} is not recognized")
        return {}
    root = _node(operation.input_shape)
    tree: dict = {}
    # Pass 1: walk each key down the shape tree into nested dicts (lists keyed by index).
    for key, value in params:
        node, container = root, tree
        parts = key.split(".")
        last = len(parts) - 1
        for i, seg in enumerate(parts):
            if node.kind == "structure":
                entry = node.members.get(seg)
                if entry is None:
                    raise ApiError("UnknownParameter", f"The parameter {key} is not recognized")
                slot, child = entry
            else:  # list: the segment is a 1-based index
                if not (seg.isascii() and seg.isdigit()) or len(seg) > _MAX_INDEX_DIGITS or int(seg) == 0:
                    raise ApiError("InvalidParameter",
                                        f"Invalid list index '{seg}' in parameter {key}: indices are integers from 1")
                slot, child = int(seg), node.member
            if i == last:
                if child.kind == "scalar":
                    if slot in container:
                        raise ApiError("InvalidParameter", f"The parameter {key} is given more than once")
                    container[slot] = child.convert(value, key)
                elif child.kind == "list" and value == "":
                    container.setdefault(slot, {})  # the Query protocol's spelling of an empty list
                else:
                    what = "a list: use " + key + ".1, " + key + ".2, ..." if child.kind == "list" else "a structure"
                    raise ApiError("InvalidParameter", f"The parameter {key} is {what} and cannot take a value")
                break
            if child.kind == "scalar":
                raise ApiError("UnknownParameter", f"The parameter {key} is not recognized")
            sub = container.get(slot)
            if sub is None:
                sub = container[slot] = {}
            container, node = sub, child
    # Pass 2: order lists by index (gaps allowed, as on EC2) and check required members.
    return _finish(root, tree, "")


def _finish(node: _Node, raw, path: str):
    if node.kind == "scalar":
        return raw
    if node.kind == "list":
        lo, hi = node.shape.metadata.get("min", 0), node.shape.metadata.get("max", MAX_LIST_ITEMS)
        if len(raw) > hi:  # before converting any of them
            raise ApiError("InvalidParameterValue", f"{path} takes {lo} to {hi} items, got {len(raw)}")
        items = [_finish(node.member, raw[i], f"{path}.{i}") for i in sorted(raw)]
        if len(items) < lo or (hi is not None and len(items) > hi):
            raise ApiError("InvalidParameterValue",
                                f"{path} takes {lo} to {hi if hi is not None else 'any number of'} items, got {len(items)}")
        return items
    members = node.members  # also fills node.wire_names
    out = {}
    for name, value in raw.items():
        wire = node.wire_names[name]
        out[name] = _finish(members[wire][1], value, f"{path}.{wire}" if path else wire)
    for name in node.required:
        if name not in out:
            wire = node.wire_names[name]
            raise ApiError("MissingParameter",
                                f"The request must contain the parameter {path + '.' + wire if path else wire}")
    return out


# ---------------------------------------------------------------------------------------------
# Responses

_XML_DECL = '<?xml version="1.0" encoding="UTF-8"?>\n'


@functools.cache
def _element_names(shape_name: str) -> dict[str, tuple[str, botocore.model.Shape]]:
    shape = ec2_model().shape_for(shape_name)
    # Without a locationName botocore's parser looks for the member name itself (e.g. Storage.S3),
    # so that, not a lower-cased guess, is what it can read back.
    return {name: (m.serialization.get("name") or name, m) for name, m in shape.members.items()}


def _format_scalar(shape: botocore.model.Shape, value) -> str:
    kind = shape.type_name
    if kind == "string" and isinstance(value, str):
        return _esc(value)
    if kind == "boolean" and isinstance(value, bool):
        return "true" if value else "false"
    if kind in ("integer", "long") and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if kind in ("double", "float") and isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(float(value))
    if kind == "timestamp" and isinstance(value, datetime):
        value = value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
        return value.strftime("%Y-%m-%dT%H:%M:%S") + f".{value.microsecond // 1000:03d}Z"
    if kind == "blob" and isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"{shape.name} ({kind}) cannot hold {type(value).__name__} {value!r}")


# Writers made once per shape (by name: names are unique within a model) and kept: walking
# the model for every value cost a DescribeImportImageTasks page of 100 a third of its time.
_writers: dict[str, Callable[[list, object], None]] = {}


def _writer(shape: botocore.model.Shape) -> Callable[[list, object], None]:
    write = _writers.get(shape.name)
    if write is None:
        write = _writers[shape.name] = _make_writer(shape)
    return write


def _make_writer(shape: botocore.model.Shape) -> Callable[[list, object], None]:
    kind = shape.type_name
    if kind == "structure":
        return _structure_writer(shape)
    if kind == "list":
        return _list_writer(shape)
    if kind == "string":
        def write_string(out: list, value) -> None:
            if not isinstance(value, str):
                raise TypeError(f"{shape.name} (string) cannot hold {type(value).__name__} "
                                f"{value!r}")
            out.append(_esc(value))
        return write_string
    return lambda out, value: out.append(_format_scalar(shape, value))


def _structure_writer(shape: botocore.model.Shape) -> Callable[[list, object], None]:
    members: dict[str, tuple] = {}  # filled on first use: shapes may refer to themselves

    def write_structure(out: list, value) -> None:
        if not isinstance(value, dict):
            raise TypeError(f"{shape.name} must be a dict, not {type(value).__name__}")
        if not members:
            members.update({name: (f"<{tag}>", f"</{tag}>", f"<{tag}/>",
                                   mshape.type_name == "list", _writer(mshape))
                            for name, (tag, mshape) in _element_names(shape.name).items()})
        for key, item in value.items():
            entry = members.get(key)
            if entry is None:
                raise ValueError(f"{shape.name} has no member {key!r}")  # a typo in a handler
            if item is None:
                continue
            opening, closing, empty, is_list, write = entry
            if is_list and not item:
                out.append(empty)  # botocore reads an empty wrapper as []
                continue
            out.append(opening)
            write(out, item)
            out.append(closing)
    return write_structure


def _list_writer(shape: botocore.model.Shape) -> Callable[[list, object], None]:
    tag = shape.member.serialization.get("name") or "item"  # lists are never flattened on output
    opening, closing = f"<{tag}>", f"</{tag}>"

    def write_list(out: list, value) -> None:
        if isinstance(value, (str, bytes, dict)):
            raise TypeError(f"{shape.name} must be a list, not {type(value).__name__}")
        write = _writer(shape.member)
        for item in value:
            out.append(opening)
            write(out, item)
            out.append(closing)
    return write_list


def serialize_response(operation: botocore.model.OperationModel, result: dict, request_id: str) -> bytes:
    """The XML body of a successful EC2 response: <{Op}Response xmlns=...><requestId/>..."""
    namespace = operation.metadata["xmlNamespace"].rstrip("/") + "/"
    out = [f'{_XML_DECL}<{operation.name}Response xmlns="{namespace}"><requestId>{_esc(request_id)}</requestId>']
    if operation.output_shape is None:
        if result:
            raise ValueError(f"{operation.name} has no output, got {sorted(result)}")
        out.append("<return>true</return>")  # what EC2 sends for output-less actions
    else:
        _writer(operation.output_shape)(out, result)
    out.append(f"</{operation.name}Response>")
    return "".join(out).encode("utf-8")


def serialize_error(code: str, message: str, request_id: str) -> bytes:
    """EC2's error envelope; note ``RequestID`` (capital D), unlike the success body."""
    return (f"{_XML_DECL}<Response><Errors><Error><Code>{_esc(code)}</Code><Message>{_esc(message)}</Message>"
            f"</Error></Errors><RequestID>{_esc(request_id)}</RequestID></Response>").encode("utf-8")
