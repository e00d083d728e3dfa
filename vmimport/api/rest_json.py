"""The rest-json protocol of the EBS direct APIs, driven by botocore's ``ebs`` model: routes
from each operation's ``requestUri``, inputs from URI labels / query string / headers, outputs
to headers + a streaming payload or a JSON body."""

from __future__ import annotations

import json
import re
from datetime import datetime
from functools import lru_cache
from urllib.parse import unquote

from botocore.model import OperationModel

from vmimport.service.errors import ApiError

from .models import service_model
from .scalars import BadValue, text_converter


@lru_cache(maxsize=None)
def _routes(service: str) -> list[tuple[str, re.Pattern, OperationModel]]:
    model = service_model(service)
    routes = []
    for name in model.operation_names:
        op = model.operation_model(name)
        uri = op.http["requestUri"].split("?")[0]
        pattern = re.sub(r"\\\{(\w+)\\\}", lambda m: f"(?P<{m.group(1)}>[^/]+)", re.escape(uri))
        routes.append((op.http["method"], re.compile(pattern + r"\Z"), op))
    return routes


def match(service: str, method: str, path: str) -> tuple[OperationModel, dict[str, str]]:
    allowed = False
    for route_method, pattern, op in _routes(service):
        m = pattern.match(path)
        if m:
            if route_method == method:
                return op, {k: unquote(v) for k, v in m.groupdict().items()}
            allowed = True
    if allowed:
        raise ApiError("ValidationException", f"{method} is not allowed on {path}", 405)
    raise ApiError("ResourceNotFoundException", f"No operation matches {method} {path}", 404)


def _convert(shape, raw: str, where: str):
    try:
        return text_converter(shape)(raw)
    except BadValue as bad:
        raise ApiError("ValidationException", f"Invalid value for {where}: {bad.why}") from None


def parse_input(op: OperationModel, labels: dict[str, str], query: list[tuple[str, str]],
                headers) -> dict:
    """Input from the URI labels, the decoded query pairs and the headers."""
    params: dict = {}
    query = dict(reversed(query))  # the first of a repeated name wins
    shape = op.input_shape
    for name, member in (shape.members.items() if shape else ()):
        location = member.serialization.get("location")
        wire = member.serialization.get("name", name)
        if location == "uri":
            raw = labels.get(wire)
        elif location == "querystring":
            raw = query.get(wire)
        elif location == "header":
            raw = headers.get(wire)
        else:
            continue  # bodies: only the write APIs have them, and they are not served
        if raw is not None:
            params[name] = _convert(member, raw, wire)
    for name in (shape.required_members if shape else ()):
        if name not in params:
            raise ApiError("ValidationException", f"Missing required parameter {name}")
    return params


def serialize_output(op: OperationModel, result: dict) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) for a successful call."""
    status = op.http.get("responseCode", 200)
    headers: dict[str, str] = {}
    body_members: dict = {}
    payload = None
    shape = op.output_shape
    for name, member in (shape.members.items() if shape else ()):
        if name not in result:
            continue
        value = result[name]
        location = member.serialization.get("location")
        if location == "header":
            headers[member.serialization.get("name", name)] = str(value)
        elif member.serialization.get("streaming") or shape.serialization.get("payload") == name:
            payload = value
        else:
            body_members[member.serialization.get("name", name)] = _jsonable(value)
    if payload is not None:
        headers["Content-Type"] = "application/octet-stream"
        return status, headers, bytes(payload)
    headers["Content-Type"] = "application/json"
    return status, headers, json.dumps(body_members).encode()


def _jsonable(value):
    if isinstance(value, datetime):
        return value.timestamp()  # rest-json's default timestamp format: epoch seconds
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def serialize_error(error: ApiError, request_id: str) -> tuple[int, dict[str, str], bytes]:
    headers = {"Content-Type": "application/json", "x-amzn-ErrorType": error.code,
               "x-amzn-RequestId": request_id}
    return error.status, headers, json.dumps({"message": error.message}).encode()
