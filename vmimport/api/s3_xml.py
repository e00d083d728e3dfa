"""S3's rest-xml, driven by botocore's ``s3`` model: an operation's input from the URI labels,
query string, headers and XML payload; its output to headers, a streamed payload or an XML
document; and S3's error document. Users' XML is parsed with defusedxml.
"""

from __future__ import annotations

from datetime import datetime, timezone
from email.utils import format_datetime, parsedate_to_datetime
from xml.sax.saxutils import escape

import botocore.model
from defusedxml import ElementTree
from defusedxml.common import DefusedXmlException

from vmimport.service.errors import S3Error

from .scalars import BadValue, text_converter

NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"
# Root element of each output document (the model names only its members).
_ROOT = {"ListBuckets": "ListAllMyBucketsResult", "ListObjects": "ListBucketResult",
         "ListObjectsV2": "ListBucketResult", "CreateMultipartUpload":
         "InitiateMultipartUploadResult", "CompleteMultipartUpload":
         "CompleteMultipartUploadResult", "ListParts": "ListPartsResult",
         "ListMultipartUploads": "ListMultipartUploadsResult", "DeleteObjects": "DeleteResult"}
META_PREFIX = "x-amz-meta-"


def _scalar(shape, raw: str):
    """A scalar from text; timestamps also in RFC 1123 (S3's headers, botocore's
    query-string dates)."""
    if shape.type_name == "timestamp" and not raw[:1].isdigit():
        try:
            return parsedate_to_datetime(raw).astimezone(timezone.utc)
        except (TypeError, ValueError):
            pass
    return text_converter(shape)(raw)


def _convert(shape, raw: str, where: str):
    try:
        if shape.type_name == "list":  # a header list: comma-separated values
            return [_scalar(shape.member, item.strip()) for item in raw.split(",")]
        return _scalar(shape, raw)
    except BadValue as bad:
        raise S3Error("InvalidArgument", f"Invalid value for {where}: {bad.why}") from None


def parse_input(op: botocore.model.OperationModel, labels: dict[str, str],
                query: list[tuple[str, str]], headers, payload: bytes | None) -> dict:
    """The operation's parameters, all but a streamed body."""
    params: dict = {}
    query_values = dict(reversed(query))
    shape = op.input_shape
    for name, member in (shape.members.items() if shape else ()):
        location = member.serialization.get("location")
        wire = member.serialization.get("name", name)
        if location == "uri":
            raw = labels.get(wire.rstrip("+"))
        elif location == "querystring":
            raw = query_values.get(wire)
        elif location == "header":
            raw = headers.get(wire)
        elif location == "headers":
            prefix = wire.lower()
            found = {k[len(prefix):]: v for k, v in headers.items() if k.startswith(prefix)}
            if found:
                params[name] = found
            continue
        else:
            if payload and shape.serialization.get("payload") == name and \
                    member.type_name == "structure":
                params[name] = _parse_document(member, payload)
            continue
        if raw is not None:
            params[name] = _convert(member, raw, wire)
    return params


def _parse_document(shape, payload: bytes) -> dict:
    try:
        root = ElementTree.fromstring(payload)
    except (ElementTree.ParseError, DefusedXmlException, ValueError):
        raise S3Error("MalformedXML", "The XML you provided was not well-formed or did not "
                      "validate against our published schema") from None
    return _element(shape, root)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _element(shape, element):
    if shape.type_name == "structure":
        out: dict = {}
        by_wire = {}
        for name, member in shape.members.items():
            by_wire[member.serialization.get("name", name)] = (name, member)
        for child in element:
            found = by_wire.get(_local(child.tag))
            if found is None:
                continue
            name, member = found
            if member.type_name == "list" and (member.serialization.get("flattened") or
                                               member.member.serialization.get("flattened")):
                out.setdefault(name, []).append(_element(member.member, child))
            else:
                out[name] = _element(member, child)
        return out
    if shape.type_name == "list":
        return [_element(shape.member, child) for child in element]
    text = element.text or ""
    try:
        return _scalar(shape, text.strip() if shape.type_name != "string" else text)
    except BadValue as bad:
        raise S3Error("MalformedXML", f"<{_local(element.tag)}>: {bad.why}") from None


def _scalar_text(shape, value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return str(value)


def _write(out: list[str], name: str, shape, value) -> None:
    if shape.type_name == "structure":
        out.append(f"<{name}>")
        _write_members(out, shape, value)
        out.append(f"</{name}>")
    elif shape.type_name == "list":
        item_name = shape.member.serialization.get("name", "member")
        out.append(f"<{name}>")
        for item in value:
            _write(out, item_name, shape.member, item)
        out.append(f"</{name}>")
    else:
        out.append(f"<{name}>{escape(_scalar_text(shape, value))}</{name}>")


def _write_members(out: list[str], shape, value: dict) -> None:
    for name, member in shape.members.items():
        if value.get(name) is None or member.serialization.get("location"):
            continue
        wire = member.serialization.get("name", name)
        if member.type_name == "list" and member.serialization.get("flattened"):
            for item in value[name]:
                _write(out, wire, member.member, item)
        else:
            _write(out, wire, member, value[name])


def serialize_output(op: botocore.model.OperationModel, result: dict):
    """(headers, body): the body is bytes, or the streamed payload as the handler gave it."""
    headers: dict[str, str] = {}
    shape = op.output_shape
    if shape is None:
        return headers, b""
    payload_name = shape.serialization.get("payload")
    for name, member in shape.members.items():
        value = result.get(name)
        location = member.serialization.get("location")
        if value is None:
            continue
        if location == "header":
            if isinstance(value, datetime):
                text = format_datetime(value.astimezone(timezone.utc), usegmt=True)
            else:
                text = _scalar_text(member, value)
            headers[member.serialization.get("name", name)] = text
        elif location == "headers":
            for key, item in value.items():
                headers[META_PREFIX + key] = str(item)
    if op.name == "GetBucketLocation":  # the document is the bare constraint
        region = result.get("LocationConstraint") or ""
        return headers, (f'<?xml version="1.0" encoding="UTF-8"?>\n<LocationConstraint '
                         f'xmlns="{NAMESPACE}">{escape(region)}</LocationConstraint>').encode()
    if payload_name:
        member = shape.members[payload_name]
        if member.type_name in ("blob", "string") or member.serialization.get("streaming"):
            return headers, result.get(payload_name, b"")
        if result.get(payload_name) is None:
            return headers, b""
        root, body_shape, value = (member.serialization.get("name", payload_name), member,
                                   result[payload_name])
    else:
        if not any(not m.serialization.get("location") and result.get(n) is not None
                   for n, m in shape.members.items()):
            return headers, b""
        root, body_shape, value = _ROOT.get(op.name, op.name + "Result"), shape, result
    out = ['<?xml version="1.0" encoding="UTF-8"?>\n', f'<{root} xmlns="{NAMESPACE}">']
    _write_members(out, body_shape, value)
    out.append(f"</{root}>")
    headers["Content-Type"] = "application/xml"
    return headers, "".join(out).encode()


def serialize_error(code: str, message: str, request_id: str,
                    resource: str | None = None) -> bytes:
    parts = [f"<Code>{escape(code)}</Code>", f"<Message>{escape(message)}</Message>"]
    if resource:
        parts.append(f"<Resource>{escape(resource)}</Resource>")
    parts.append(f"<RequestId>{escape(request_id)}</RequestId>")
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<Error>' + "".join(parts)
            + "</Error>").encode()
