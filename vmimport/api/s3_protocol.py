"""The S3 protocol (rest-xml) of the front door: where the bucket and key are (path style or
virtual-hosted style), which operation a method + path + query + headers is (from botocore's
``s3`` model), and S3's XML replies and errors.

Unlike the other protocols its request body is not read by the front door: it arrives as a
``RequestBody`` that the handler streams to disk (``ApiRequest.stream``).
"""

from __future__ import annotations

import re
from functools import lru_cache
from urllib.parse import unquote

from vmimport.service.errors import ApiError, S3Error

from . import s3_xml
from .models import service_model
from .protocol_base import (AUTH, DENIED, EXPIRED, INTERNAL, INVALID, SIGNATURE, THROTTLED,
                            TOKEN, UNAVAILABLE, Protocol, Reply)

MAX_XML_BODY = 1024 * 1024
_NO_CONTENT = {"DeleteObject", "DeleteBucket", "AbortMultipartUpload"}
_HOST_PORT = re.compile(r":\d+\Z")


@lru_cache(maxsize=None)
def _routes():
    """(method, with key, names required in the query, headers required, operation)."""
    model = service_model("s3")
    routes = []
    for name in model.operation_names:
        op = model.operation_model(name)
        path, _, literal = op.http["requestUri"].partition("?")
        if path not in ("/", "/{Bucket}", "/{Bucket}/{Key+}"):
            continue
        query = {part.split("=")[0] for part in literal.split("&") if part}
        headers = set()
        shape = op.input_shape
        for member_name in (shape.required_members if shape else ()):
            member = shape.members[member_name]
            location = member.serialization.get("location")
            wire = member.serialization.get("name", member_name)
            if location == "querystring":
                query.add(wire)
            elif location == "header":
                headers.add(wire.lower())
        routes.append((op.http["method"], path.endswith("{Key+}"), path == "/",
                       frozenset(query), frozenset(headers), op))
    return routes


class S3Protocol(Protocol):
    streams_body = True
    codes = {AUTH: ("AccessDenied", 403), SIGNATURE: ("SignatureDoesNotMatch", 403),
             TOKEN: ("InvalidToken", 400), EXPIRED: ("ExpiredToken", 400),
             DENIED: ("AccessDenied", 403),
             THROTTLED: ("SlowDown", 503), INVALID: ("InvalidRequest", 400),
             UNAVAILABLE: ("ServiceUnavailable", 503), INTERNAL: ("InternalError", 500)}

    def __init__(self, service, actions_table, virtual_host_suffixes=("localhost",)):
        super().__init__(service, actions_table)
        self.suffixes = tuple(s.lower().strip(".") for s in virtual_host_suffixes if s)

    def locate(self, request) -> tuple[str | None, str | None]:
        """(bucket, key) of a request, from its Host (virtual-hosted) or its path."""
        host = _HOST_PORT.sub("", (request.headers.get("host") or "").lower())
        path = request.path
        for suffix in self.suffixes:
            if host.endswith("." + suffix):
                bucket = host[:-len(suffix) - 1]
                key = unquote(path[1:]) if len(path) > 1 else None
                return bucket, key
        bucket, _, key = path[1:].partition("/")
        return (unquote(bucket) or None), (unquote(key) or None)

    def operation(self, request):
        bucket, key = self.locate(request)
        if bucket is not None:
            request.labels["Bucket"] = bucket
        if key is not None:
            request.labels["Key"] = key
        names = {k for k, _ in request.query}
        best, best_score = None, -1
        for method, with_key, root, query, headers, op in _routes():
            if method != request.method or with_key != (key is not None) or \
                    root != (bucket is None):
                continue
            if query <= names and all(h in request.headers for h in headers):
                score = len(query) + len(headers)
                if score > best_score:
                    best, best_score = op, score
        if best is None:
            raise S3Error("MethodNotAllowed", f"The specified method {request.method[:10]} is "
                          "not allowed against this resource.", request.path[:1024], 405)
        return best

    def handler(self, operation):
        handler = self.actions.get(operation.name)
        if handler is None:
            raise S3Error("NotImplemented", f"{operation.name} is an S3 operation that "
                          "vmimport does not serve; see the README's S3 API coverage table")
        return handler

    def parse(self, operation, request):
        shape = operation.input_shape
        payload_name = shape.serialization.get("payload") if shape else None
        payload_member = shape.members.get(payload_name) if payload_name else None
        # The body as the front door hands it over (a stream), or as bytes (tests, in process).
        body = request.stream if request.stream is not None else request.body
        document = None
        if payload_member is not None and payload_member.type_name == "structure":
            document = body if isinstance(body, bytes) else body.read_all(MAX_XML_BODY)
        query = [(k, v) for k, v in request.query if not k.startswith("X-Amz-")]
        params = s3_xml.parse_input(operation, request.labels, query, request.headers, document)
        if payload_member is not None and payload_member.type_name == "blob":
            params[payload_name] = body
        for name in (shape.required_members if shape else ()):
            if name not in params and name != payload_name:
                raise S3Error("InvalidArgument", f"Missing required parameter {name}")
        return params

    def reply(self, operation, result, request_id):
        headers, body = s3_xml.serialize_output(operation, result)
        status = operation.http.get("responseCode", 200)
        if operation.name in _NO_CONTENT:
            status = 204
        elif result.get("ContentRange"):
            status = 206
        if "ContentLength" in result:
            headers["Content-Length"] = str(result["ContentLength"])
        return Reply(status, body, headers)

    def api_error(self, error: ApiError, request_id: str) -> Reply:
        resource = getattr(error, "resource", None)
        if error.status == 304:
            return Reply(304, b"", {})
        return Reply(error.status, s3_xml.serialize_error(error.code, error.message,
                                                          request_id, resource),
                     {"Content-Type": "application/xml"})

    def error(self, code, message, status, request_id):
        return Reply(status, s3_xml.serialize_error(code, message, request_id),
                     {"Content-Type": "application/xml"})
