"""Every served action of every protocol, both ways, through botocore's own code: its serializer
writes a request our parser must read back to the same input, and our serializer writes a
result its parser must read back to the same output. Values come from the model (every member
filled, lists of two, enums, ranges), so a new action is covered the day it is served."""

from __future__ import annotations

import io
from xml.etree import ElementTree
from datetime import datetime, timezone
from urllib.parse import urlencode, urlsplit

import botocore.parsers
import botocore.serialize
import pytest
from botocore.awsrequest import HeadersDict
from botocore.response import StreamingBody
from starlette.datastructures import Headers

from vmimport.api.protocol_base import ApiRequest
from vmimport.api.protocols import served_protocols
from vmimport.api.sigv4 import decode_query

PROTOCOLS = served_protocols()
CASES = [(service, name) for service, protocol in sorted(PROTOCOLS.items())
         for name in sorted(protocol.actions)]
WHEN = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)


def example(shape, depth=0, seed=0):
    """A value of ``shape`` that every check of the model accepts."""
    kind = shape.type_name
    if kind == "structure":
        if depth > 4:
            return {}
        return {name: example(member, depth + 1, seed + i)
                for i, (name, member) in enumerate(shape.members.items())
                if not member.serialization.get("eventstream")}
    if kind == "list":
        return [example(shape.member, depth + 1, seed + i) for i in range(2)] if depth <= 4 else []
    if kind == "map":
        return {f"k{seed}": example(shape.value, depth + 1, seed)}
    if kind == "string":
        if shape.enum:
            return shape.enum[seed % len(shape.enum)]
        low, high = shape.metadata.get("min", 1), shape.metadata.get("max", 64)
        text = f"v{seed} & <x> é+/="
        return (text * (low // len(text) + 1))[:max(low, min(high, len(text)))]
    if kind in ("integer", "long"):
        low, high = shape.metadata.get("min", 1), shape.metadata.get("max", 10**6)
        return max(low, min(high, 7 + seed))
    if kind in ("double", "float"):
        return 1.5 + seed
    if kind == "boolean":
        return seed % 2 == 0
    if kind == "timestamp":
        return WHEN
    if kind == "blob":
        return bytes([0, 1, 2, 255, seed % 256])
    raise TypeError(kind)


def as_api_request(wire: dict, protocol_name: str) -> ApiRequest:
    body = wire["body"]
    if isinstance(body, dict):  # the Query protocols leave the form to the HTTP layer
        body = urlencode([(k, str(v)) for k, v in body.items()]).encode()
    elif isinstance(body, str):
        body = body.encode()
    query = wire.get("query_string") or ""
    if isinstance(query, dict):
        query = urlencode([(k, item) for k, v in query.items()
                           for item in (v if isinstance(v, list) else [v])])
    url = urlsplit(wire["url_path"])
    headers = Headers({k: str(v) for k, v in wire["headers"].items()})
    # rest-xml keeps literal query parts (S3's "?uploads", "?list-type=2") in the path
    return ApiRequest(wire["method"], url.path, decode_query(url.query) + decode_query(query),
                      headers, body or b"", "req-1")


def normalized(value):
    if isinstance(value, dict):
        return {k: normalized(v) for k, v in value.items() if k != "ResponseMetadata"}
    if isinstance(value, list):
        return [normalized(v) for v in value]
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).replace(microsecond=0)
    if isinstance(value, StreamingBody):
        return value.read()
    return value


@pytest.mark.parametrize("service,name", CASES, ids=[f"{s}:{n}" for s, n in CASES])
def test_input_parses_back(service, name):
    protocol = PROTOCOLS[service]
    operation = protocol.model.operation_model(name)
    kind = protocol.model.metadata["protocol"]
    params = example(operation.input_shape) if operation.input_shape else {}
    if operation.input_shape is not None:  # members that travel in the body of write APIs only
        params = {k: v for k, v in params.items()
                  if kind != "rest-json" or operation.input_shape.members[k].serialization.get("location")}
    wire = botocore.serialize.create_serializer(kind, include_validation=False) \
        .serialize_to_request(params, operation)
    request = as_api_request(wire, kind)
    assert protocol.operation(request).name == name
    assert normalized(protocol.parse(operation, request)) == normalized(params)


@pytest.mark.parametrize("service,name", CASES, ids=[f"{s}:{n}" for s, n in CASES])
def test_output_parses_back(service, name):
    protocol = PROTOCOLS[service]
    operation = protocol.model.operation_model(name)
    result = example(operation.output_shape) if operation.output_shape else {}
    reply = protocol.reply(operation, result, "req-1")
    assert reply.status < 300
    parser = botocore.parsers.create_parser(protocol.model.metadata["protocol"])
    http = {"status_code": reply.status, "headers": HeadersDict(reply.headers), "body": reply.body}
    if any(m.serialization.get("streaming") for m in
           (operation.output_shape.members.values() if operation.output_shape else ())):
        http["body"] = StreamingBody(io.BytesIO(reply.body), len(reply.body))
    parsed = parser.parse(http, operation.output_shape)
    if (service, name) == ("s3", "GetBucketLocation"):  # botocore parses it by hand too
        root = ElementTree.fromstring(reply.body)
        parsed["LocationConstraint"] = root.text
    assert "Error" not in parsed, parsed
    assert normalized(parsed) == normalized(result)


@pytest.mark.parametrize("service", sorted(PROTOCOLS))
def test_errors_parse_back(service):
    protocol = PROTOCOLS[service]
    operation = protocol.model.operation_model(sorted(protocol.actions)[0])
    reply = protocol.error("SomeCode", "what went wrong & why", 400, "req-1")
    parser = botocore.parsers.create_parser(protocol.model.metadata["protocol"])
    parsed = parser.parse({"status_code": reply.status, "headers": HeadersDict(reply.headers),
                           "body": reply.body}, operation.output_shape)
    assert parsed["Error"]["Code"] == "SomeCode"
    assert parsed["Error"]["Message"] == "what went wrong & why"


@pytest.mark.parametrize("service", sorted(PROTOCOLS))
def test_every_protocol_words_every_refusal(service):
    """Each failure the front door names has a code in every protocol (no fallback)."""
    from vmimport.api import protocol_base
    kinds = {protocol_base.AUTH, protocol_base.SIGNATURE, protocol_base.TOKEN,
             protocol_base.EXPIRED, protocol_base.DENIED, protocol_base.THROTTLED,
             protocol_base.INVALID, protocol_base.UNAVAILABLE, protocol_base.INTERNAL}
    assert kinds <= PROTOCOLS[service].codes.keys()
