"""The AWS JSON protocol (KMS), driven by botocore's service model.

Requests: ``POST /`` with ``X-Amz-Target: TrentService.<Operation>`` and a JSON body whose
members are the boto3 names; blobs arrive base64-encoded, timestamps as epoch seconds.
Responses: the output shape as JSON (blobs base64, timestamps epoch seconds); errors
``{"__type": "<Code>", "message": "..."}`` with a 4xx/5xx status — what botocore's
``JSONParser`` reads back.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime, timezone

import botocore.model

from vmimport.service.errors import ApiError

from .models import service_model
from .text import forbidden_character

CONTENT_TYPE = "application/x-amz-json-1.1"


def operation_for(service: str, target: str | None) -> botocore.model.OperationModel:
    """The operation named by an ``X-Amz-Target`` header (``TrentService.CreateKey``)."""
    model = service_model(service)
    prefix = model.metadata["targetPrefix"] + "."
    if not target or not target.startswith(prefix):
        raise ApiError("UnknownOperationException",
                       f"X-Amz-Target must be {prefix}<Operation>, got {target!r}")
    name = target[len(prefix):]
    if name not in model.operation_names:
        raise ApiError("UnknownOperationException", f"{name} is not a {service} operation")
    return model.operation_model(name)


def _invalid(where: str, why: str) -> ApiError:
    return ApiError("ValidationException", f"1 validation error detected: Value at '{where}' "
                    f"{why}")


def _parse(shape: botocore.model.Shape, value, where: str):
    kind = shape.type_name
    if value is None:
        return None
    if kind == "structure":
        if not isinstance(value, dict):
            raise _invalid(where, "must be an object")
        out = {}
        for name, member in shape.members.items():
            if name in value:
                parsed = _parse(member, value[name], f"{where}.{name}" if where else name)
                if parsed is not None:
                    out[name] = parsed
        # Unknown members are ignored, as AWS's JSON services do.
        for name in shape.required_members:
            if name not in out:
                raise _invalid(f"{where}.{name}" if where else name,
                               "failed to satisfy constraint: Member must not be null")
        return out
    if kind == "list":
        if not isinstance(value, list):
            raise _invalid(where, "must be a list")
        return [_parse(shape.member, v, f"{where}.{i}") for i, v in enumerate(value, 1)]
    if kind == "map":
        if not isinstance(value, dict):
            raise _invalid(where, "must be a map")
        return {_parse(shape.key, k, where): _parse(shape.value, v, f"{where}.{k}")
                for k, v in value.items()}
    if kind == "blob":
        if not isinstance(value, str):
            raise _invalid(where, "must be base64 text")
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise _invalid(where, "is not valid base64") from None
    if kind == "boolean":
        if not isinstance(value, bool):
            raise _invalid(where, "must be true or false")
        return value
    if kind in ("integer", "long"):
        if not isinstance(value, int) or isinstance(value, bool):
            raise _invalid(where, "must be an integer")
        return value
    if kind in ("float", "double"):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise _invalid(where, "must be a number")
        return float(value)
    if kind == "timestamp":
        try:
            return datetime.fromtimestamp(float(value), timezone.utc)
        except (TypeError, ValueError, OverflowError):
            raise _invalid(where, "must be epoch seconds") from None
    if not isinstance(value, str):
        raise _invalid(where, "must be a string")
    if why := forbidden_character(value):
        raise _invalid(where, f"is refused: {why}")
    if shape.enum and value not in shape.enum:
        raise _invalid(where, "failed to satisfy constraint: Member must satisfy enum value "
                       f"set: [{', '.join(shape.enum)}]")
    return value


def parse_request(operation: botocore.model.OperationModel, body: bytes) -> dict:
    if operation.input_shape is None:
        return {}
    try:
        data = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise ApiError("SerializationException", "The request body is not valid JSON") from None
    return _parse(operation.input_shape, data, "")


def _render(shape: botocore.model.Shape, value):
    kind = shape.type_name
    if kind == "structure":
        out = {}
        for name, item in value.items():
            member = shape.members.get(name)
            if member is None:
                raise ValueError(f"{shape.name} has no member {name!r}")  # a handler's typo
            if item is not None:
                out[name] = _render(member, item)
        return out
    if kind == "list":
        return [_render(shape.member, v) for v in value]
    if kind == "map":
        return {k: _render(shape.value, v) for k, v in value.items()}
    if kind == "blob":
        return base64.b64encode(bytes(value)).decode("ascii")
    if kind == "timestamp":
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.timestamp()
    return value


def serialize_response(operation: botocore.model.OperationModel, result: dict) -> bytes:
    if operation.output_shape is None:
        return b"{}"
    return json.dumps(_render(operation.output_shape, result)).encode()


def serialize_error(code: str, message: str) -> bytes:
    return json.dumps({"__type": code, "message": message}).encode()
