"""The front door: one HTTP endpoint speaking the EC2 Query protocol (``POST /`` or ``GET /?Action=``),
IAM's Query protocol and KMS's JSON protocol on the same ``/`` (told apart by ``X-Amz-Target`` and
the service in the SigV4 credential scope), and the EBS direct APIs (``/snapshots/...``), every
request SigV4-verified."""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import re
import threading
import time
import uuid
from urllib.parse import parse_qsl

import anyio.to_thread
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from vmimport.config import Credential, Settings
from vmimport.db.session import Database
from vmimport.service.context import Context
from vmimport.service.errors import ApiError

from . import ec2_protocol, json_protocol, query_protocol, rest_json
from .actions import EBS_ACTIONS, EC2_ACTIONS, IAM_ACTIONS, KMS_ACTIONS
from .sigv4 import AuthError, verify_request

log = logging.getLogger("vmimport.api")

MAX_BODY = 1024 * 1024
XML = "text/xml;charset=UTF-8"
# The service a request was signed for, read before verification only to pick the protocol
# (and so the error envelope); verification itself is what decides whether it is honoured.
_SCOPE_SERVICE = re.compile(r"Credential=[^/,\s]+/\d{8}/[^/]+/([^/]+)/aws4_request")
_QUERY_SCOPE_SERVICE = re.compile(r"(?:^|&)X-Amz-Credential=[^&/]+(?:/|%2F)\d{8}(?:/|%2F)"
                                  r"[^&/%]+(?:/|%2F)([^&/%]+)(?:/|%2F)aws4_request", re.I)
# IAM's conventions for HTTP status by error code (botocore only needs >= 300).
_IAM_STATUS = {"NoSuchEntity": 404, "EntityAlreadyExists": 409, "DeleteConflict": 409,
               "LimitExceeded": 409, "AccessDenied": 403, "SignatureDoesNotMatch": 403,
               "InvalidClientTokenId": 403, "Throttling": 400, "ServiceFailure": 500}


class RateLimiter:
    """A token bucket per access key: ``rate`` requests a second, bursts of ``2 * rate``."""

    def __init__(self, rate: float):
        self.rate = rate
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        if self.rate <= 0:
            return True
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (2 * self.rate, now))
            tokens = min(2 * self.rate, tokens + (now - last) * self.rate)
            allowed = tokens >= 1
            self._buckets[key] = (tokens - 1 if allowed else tokens, now)
            return allowed


class Api:
    def __init__(self, settings: Settings, db: Database):
        self.settings = settings
        self.db = db
        self.credentials: dict[str, Credential] = {c.access_key: c for c in settings.credentials}
        self.limiter = RateLimiter(settings.rate_limit_per_second)

    def _lookup(self, access_key: str):
        cred = self.credentials.get(access_key)
        return (cred.secret_key, cred.account_id) if cred else None

    async def _authenticate(self, request: Request, body: bytes):
        scope = request.scope
        caller = verify_request(
            request.method, scope.get("raw_path", scope["path"].encode()).decode("latin-1"),
            scope.get("query_string", b"").decode("latin-1"), request.headers, body,
            self._lookup)
        if not self.limiter.allow(caller.access_key):
            raise ApiError("RequestLimitExceeded", "Request limit exceeded.")
        return caller

    def _authorize(self, caller, action: str) -> bool:
        patterns = self.credentials[caller.access_key].actions
        return any(fnmatch.fnmatchcase(action, p) for p in patterns)

    def _context(self, caller) -> Context:
        return Context(account_id=caller.account_id, region=self.settings.region,
                       db=self.db, settings=self.settings)

    async def root(self, request: Request) -> Response:
        """``/``: KMS (X-Amz-Target), IAM (signed for iam) or EC2."""
        target = request.headers.get("x-amz-target", "")
        if target.startswith("TrentService."):
            return await self.kms(request)
        match = (_SCOPE_SERVICE.search(request.headers.get("authorization", ""))
                 or _QUERY_SCOPE_SERVICE.search(request.url.query))
        if match and match.group(1) == "iam":
            return await self.iam(request)
        return await self.ec2(request)

    # --- EC2 Query protocol -------------------------------------------------------------
    async def ec2(self, request: Request) -> Response:
        request_id = str(uuid.uuid4())
        started = time.monotonic()
        action = "?"
        try:
            body = await _read_body(request)
            caller = await self._authenticate(request, body)
            pairs = _query_pairs(request, body)
            fields = dict(pairs)
            action = fields.get("Action", "")
            if caller.service != "ec2":
                raise ApiError("UnsupportedOperation",
                               f"The {caller.service} service is not served by vmimport "
                               "(the request was signed for it); only ec2, ebs, iam and kms "
                               "are")
            if not action:
                raise ApiError("MissingAction", "The request must contain the parameter Action")
            handler = EC2_ACTIONS.get(action)
            model = ec2_protocol.ec2_model()
            if handler is None:
                if action in model.operation_names:
                    raise ApiError("UnsupportedOperation",
                                   f"{action} is an EC2 action that vmimport does not serve "
                                   "(yet); see the README's API coverage table")
                raise ApiError("InvalidAction",
                               f"The action {action} is not valid for this web service.")
            operation = model.operation_model(action)
            params = ec2_protocol.parse_query(
                operation, [(k, v) for k, v in pairs if k not in ("Action", "Version")])
            if not self._authorize(caller, action):
                raise ApiError("UnauthorizedOperation",
                               f"You are not authorized to perform this operation "
                               f"({action} is not allowed for access key {caller.access_key}).")
            if params.get("DryRun"):
                raise ApiError("DryRunOperation",
                               "Request would have succeeded, but DryRun flag is set.")
            result = await run_in_threadpool(handler, self._context(caller), params)
            body_out = ec2_protocol.serialize_response(operation, result, request_id)
            status = 200
        except (ApiError, ec2_protocol.ProtocolError, AuthError) as exc:
            status = getattr(exc, "status", None) or _status_for(exc.code)
            body_out = ec2_protocol.serialize_error(exc.code, exc.message, request_id)
        except Exception:
            log.exception("request %s (%s) failed", request_id, action)
            status = 500
            body_out = ec2_protocol.serialize_error(
                "InternalError", "An internal error has occurred; the server log has details "
                f"under request {request_id}", request_id)
        return _xml_reply(action, request_id, status, started, body_out)

    # --- IAM (Query protocol) -------------------------------------------------------------
    async def iam(self, request: Request) -> Response:
        request_id = str(uuid.uuid4())
        started = time.monotonic()
        action = "?"
        model = query_protocol.service_model("iam")
        namespace = model.metadata["xmlNamespace"]
        try:
            body = await _read_body(request)
            caller = await self._authenticate(request, body)
            pairs = _query_pairs(request, body)
            action = dict(pairs).get("Action", "")
            if not action:
                raise ApiError("MissingAction", "The request must contain the parameter Action")
            handler = IAM_ACTIONS.get(action)
            if handler is None:
                if action in model.operation_names:
                    raise ApiError("InvalidAction", f"{action} is an IAM action that vmimport "
                                   "does not serve; see the README's API coverage table")
                raise ApiError("InvalidAction",
                               f"Could not find operation {action} for version 2010-05-08")
            operation = model.operation_model(action)
            params = query_protocol.parse_query(
                operation, [(k, v) for k, v in pairs if k not in ("Action", "Version")])
            if not self._authorize(caller, action):
                raise ApiError("AccessDenied", f"User: access key {caller.access_key} is not "
                               f"authorized to perform: iam:{action}", 403)
            result = await run_in_threadpool(handler, self._context(caller), params)
            body_out = query_protocol.serialize_response(operation, result, request_id)
            status = 200
        except (ApiError, AuthError) as exc:
            code = exc.code
            if isinstance(exc, AuthError) and code == "AuthFailure":
                code = "InvalidClientTokenId"
            status = _IAM_STATUS.get(code) or (exc.status if isinstance(exc, ApiError) else 403)
            body_out = query_protocol.serialize_error(namespace, code, exc.message, request_id,
                                                      sender=status < 500)
        except Exception:
            log.exception("request %s (iam %s) failed", request_id, action)
            status = 500
            body_out = query_protocol.serialize_error(
                namespace, "ServiceFailure", "An internal error has occurred; the server log "
                f"has details under request {request_id}", request_id, sender=False)
        return _xml_reply(f"iam:{action}", request_id, status, started, body_out)

    # --- KMS (JSON protocol) --------------------------------------------------------------
    async def kms(self, request: Request) -> Response:
        request_id = str(uuid.uuid4())
        started = time.monotonic()
        name = request.headers.get("x-amz-target", "?")
        headers = {"x-amzn-RequestId": request_id, "Server": "vmimport"}
        try:
            body = await _read_body(request)
            caller = await self._authenticate(request, body)
            if caller.service != "kms":
                raise ApiError("InvalidSignatureException", f"The request was signed for "
                               f"{caller.service}, not kms")
            operation = json_protocol.operation_for("kms", request.headers.get("x-amz-target"))
            name = operation.name
            handler = KMS_ACTIONS.get(name)
            if handler is None:
                raise ApiError("UnsupportedOperationException", f"{name} is a KMS operation "
                               "that vmimport does not serve; see the README's API coverage "
                               "table")
            params = json_protocol.parse_request(operation, body)
            if not self._authorize(caller, name):
                raise ApiError("AccessDeniedException", f"access key {caller.access_key} is "
                               f"not authorized to perform: kms:{name}")
            result = await run_in_threadpool(handler, self._context(caller), params)
            body_out = json_protocol.serialize_response(operation, result)
            status = 200
        except (ApiError, AuthError) as exc:
            code = exc.code
            if isinstance(exc, AuthError):
                code = {"AuthFailure": "UnrecognizedClientException"}.get(code, code)
                status = 400
            else:
                status = exc.status if exc.status != 401 else 400
            body_out = json_protocol.serialize_error(code, exc.message)
            headers["x-amzn-ErrorType"] = code
        except Exception:
            log.exception("request %s (%s) failed", request_id, name)
            status = 500
            body_out = json_protocol.serialize_error(
                "KMSInternalException", "An internal error has occurred; the server log has "
                f"details under request {request_id}")
        log.info("kms:%s %s %d %.1fms", name, request_id, status,
                 (time.monotonic() - started) * 1000)
        return Response(body_out, status, media_type=json_protocol.CONTENT_TYPE, headers=headers)

    # --- EBS direct APIs (rest-json) ----------------------------------------------------
    async def ebs(self, request: Request) -> Response:
        request_id = str(uuid.uuid4())
        try:
            body = await _read_body(request)
            caller = await self._authenticate(request, body)
            operation, labels = rest_json.match("ebs", request.method, request.url.path)
            handler = EBS_ACTIONS.get(operation.name)
            if handler is None:
                raise ApiError("ValidationException",
                               f"{operation.name} is not served by vmimport (snapshots are "
                               "created by imports; only the read APIs are served)", 400)
            if not self._authorize(caller, operation.name):
                raise ApiError("AccessDeniedException",
                               f"{operation.name} is not allowed for access key "
                               f"{caller.access_key}", 403)
            params = rest_json.parse_input(operation, labels, request.url.query, request.headers)
            result = await run_in_threadpool(handler, self._context(caller), params)
            status, headers, payload = rest_json.serialize_output(operation, result)
        except AuthError as exc:
            status, headers, payload = rest_json.serialize_error(
                ApiError("AccessDeniedException" if exc.code == "AuthFailure" else exc.code,
                         exc.message, 403), request_id)
        except ApiError as exc:
            status, headers, payload = rest_json.serialize_error(exc, request_id)
        except Exception:
            log.exception("request %s failed", request_id)
            status, headers, payload = rest_json.serialize_error(
                ApiError("InternalServerException", f"internal error (request {request_id})",
                         500), request_id)
        headers.setdefault("x-amzn-RequestId", request_id)
        return Response(payload, status, headers=headers)


def _xml_reply(label: str, request_id: str, status: int, started: float, body: bytes) -> Response:
    """The access-log line and the XML response of a Query-protocol request (EC2, IAM)."""
    log.info("%s %s %d %.1fms", label, request_id, status, (time.monotonic() - started) * 1000)
    return Response(body, status, media_type=XML,
                    headers={"x-amzn-RequestId": request_id, "Server": "vmimport"})


def _query_pairs(request: Request, body: bytes) -> list[tuple[str, str]]:
    """Query-protocol parameters: the form body (POST) plus the query string, without the
    presigned-URL auth parameters."""
    pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True) \
        if request.method == "POST" else []
    return pairs + [(k, v) for k, v in parse_qsl(request.url.query, keep_blank_values=True)
                    if not k.startswith("X-Amz-")]


def _status_for(code: str) -> int:
    return ApiError(code, "").status


async def _read_body(request: Request) -> bytes:
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > MAX_BODY:
        raise ApiError("InvalidParameterValue", f"The request body is larger than {MAX_BODY} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise ApiError("InvalidParameterValue",
                           f"The request body is larger than {MAX_BODY} bytes")
    return body


def load_models() -> None:
    """Parse the botocore service models now rather than on the first request of each kind."""
    ec2_protocol.ec2_model()
    for name in ("ebs", "iam", "kms"):
        rest_json.service_model(name)


def create_app(settings: Settings, db: Database) -> Starlette:
    load_models()
    api = Api(settings, db)
    routes = [
        Route("/", api.root, methods=["GET", "POST"]),
        Route("/snapshots/{rest:path}", api.ebs, methods=["GET", "POST", "PUT"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app):
        # run_in_threadpool draws on anyio's default limiter (see Settings.api_threads)
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.api_threads
        yield

    return Starlette(routes=routes, lifespan=lifespan)
