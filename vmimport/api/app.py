"""The front door: one HTTP endpoint for every served AWS service, and one request pipeline.

A request is routed by the service its SigV4 credential scope names (unsigned ones by path and
``X-Amz-Target``, only to be refused in the right envelope), then goes through the same steps
whatever its protocol: request id, header and body limits, signature, scope and token checks,
rate limit, a per-key share of the handler threads, and — on a thread — operation lookup,
parsing, authorization, the handler, serialization; errors are worded by the protocol
(``protocols.py``) and every request leaves one access-log line.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import logging
import re
import sqlite3
import time
import uuid

import anyio.from_thread
import anyio.to_thread
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from vmimport.blockstore.backends import open_block_store
from vmimport.console import console_file, to_console, wants_console
from vmimport.config import Credential, Settings
from vmimport.db.session import Database
from vmimport.service import sts
from vmimport.service.context import Context, Principal, key_principal
from vmimport.service.errors import ApiError
from vmimport.service.iam_actions import iam_action

from .health import health, ready
from .key_limits import KeySlots, RateLimiter, SharedRateLimiter
from .metrics import Metrics
from .models import load_models
from .s3_body import ConnectionBody, RequestBody
from .protocol_base import (AUTH, EXPIRED, INTERNAL, INVALID, SIGNATURE, THROTTLED, TOKEN,
                            UNAVAILABLE, ApiRequest, Protocol, Refusal, Reply)
from .protocols import served_protocols
from .sigv4 import AuthError, Caller, QueryEncodingError, decode_query, verify_request

log = logging.getLogger("vmimport.api")

MAX_BODY = 1024 * 1024
# Bounds checked before any other work. SDKs send about ten headers; S3 metadata adds a few.
MAX_HEADERS = 128
MAX_HEADER_BYTES = 32 * 1024
MAX_QUERY_BYTES = 48 * 1024  # the HTTP parser itself refuses URLs past ~64 KiB
# The service a request was signed for, read before verification only to pick the protocol
# (and so the error envelope); verification itself is what decides whether it is honoured.
_SCOPE_SERVICE = re.compile(r"Credential=[^/,\s]+/\d{8}/[^/]+/([^/]+)/aws4_request")
_SCOPE_KEY = re.compile(r"Credential=([^/,\s]+)/|(?:^|&)X-Amz-Credential=([^&/%]+)")
_QUERY_SCOPE_SERVICE = re.compile(r"(?:^|&)X-Amz-Credential=[^&/]+(?:/|%2F)\d{8}(?:/|%2F)"
                                  r"[^&/%]+(?:/|%2F)([^&/%]+)(?:/|%2F)aws4_request", re.I)
_SIGV2_QUERY = re.compile(r"(?:^|&)AWSAccessKeyId=")
# IAM is a global service: clients sign it for us-east-1 whatever region they use (STS too,
# when a client uses its global endpoint).
_GLOBAL_SERVICES = {"iam": "us-east-1", "sts": "us-east-1"}
# Actions every caller may take whatever its rights, as on AWS (and ending one's own session:
# a Describe*-only key may sign out too).
_ALWAYS_ALLOWED = {("sts", "GetCallerIdentity"), ("sts", "GetSessionToken"),
                   ("vmimport", "EndSession")}


class Api:
    def __init__(self, settings: Settings, db: Database,
                 rate_limiter: RateLimiter | SharedRateLimiter | None = None):
        self.settings = settings
        self.db = db
        self.credentials: dict[str, Credential] = {c.access_key: c for c in settings.credentials}
        self.limiter = rate_limiter or RateLimiter(settings.rate_limit_per_second)
        self.slots = KeySlots(settings.api_threads_per_key or max(1, settings.api_threads - 1))
        self.protocols = served_protocols(settings.s3_virtual_host_suffixes)
        self.transfer_limiter: anyio.CapacityLimiter | None = None  # made on the event loop
        self.blocks = open_block_store(settings)  # one for every request
        self.metrics = Metrics(db, settings.metrics_allowed_networks)

    # --- routing --------------------------------------------------------------------------
    @staticmethod
    def signed_for(request: Request) -> str | None:
        """The service a request's credential scope names (unverified), if it is signed."""
        authorization = request.headers.get("authorization", "")
        query = request.scope.get("query_string", b"").decode("latin-1")
        match = _SCOPE_SERVICE.search(authorization) or _QUERY_SCOPE_SERVICE.search(query)
        if match:
            return match.group(1)
        if authorization.startswith("AWS ") or _SIGV2_QUERY.search(query):
            return "s3"  # only S3 has SigV2: refused, but in S3's words (SigV4 is required)
        return None

    def protocol_for(self, request: Request) -> Protocol:
        service = self.signed_for(request)
        if service is None and request.url.path.startswith("/snapshots/"):
            service = "ebs"
        elif service is None and request.headers.get("x-amz-target", "").startswith("TrentService."):
            service = "kms"
        elif service is None:
            service = "ec2"
        # A service not served is refused (once the scope is read) in EC2's envelope.
        return self.protocols.get(service) or self.protocols["ec2"]

    def _check_scope(self, region: str, service: str) -> None:
        if service not in self.protocols:
            raise ApiError("UnsupportedOperation", f"The {service[:40]} service is not served by "
                           "vmimport (the request was signed for it); only "
                           f"{', '.join(sorted(self.protocols))} are")
        allowed = {self.settings.region, _GLOBAL_SERVICES.get(service)}
        if region not in allowed:
            raise AuthError("AuthFailure", f"Credential should be scoped to a valid region, not "
                            f"'{region[:40]}': this endpoint answers for {self.settings.region}")

    # --- the pipeline ---------------------------------------------------------------------
    async def handle(self, request: Request) -> Response:
        request_id = str(uuid.uuid4())
        started = time.monotonic()
        protocol = self.protocol_for(request)
        streamed = ConnectionBody(request) if protocol.streams_body else None
        label = [protocol.service, "?"]
        access_key = "-"
        try:
            _check_request_size(request)
            # A streamed body is read by its handler (S3 objects can be any size); others whole.
            body = None if protocol.streams_body else await _read_body(request)
            try:
                query = decode_query(request.scope.get("query_string", b"").decode("latin-1"))
            except QueryEncodingError as exc:
                raise Refusal(INVALID, str(exc)) from None
            if _signed_with_temporary_key(request):
                # Its secret is in the database: look it up on a thread, not the event loop.
                caller, signed = await run_in_threadpool(self._authenticate, request, query,
                                                         body)
            else:
                caller, signed = self._authenticate(request, query, body)
            access_key = caller.access_key
            if not self.limiter.allow(caller.access_key):
                raise Refusal(THROTTLED, "Request limit exceeded.")
            raw_path = request.scope.get("raw_path", request.scope["path"].encode())
            api_request = ApiRequest(request.method, raw_path.decode("latin-1").split("?", 1)[0],
                                     query, request.headers, body or b"", request_id)
            async with self.slots.hold(caller.access_key):
                if body is None:
                    reply = await self._serve_streamed(streamed, protocol, api_request, caller,
                                                       signed, label)
                else:
                    reply = await run_in_threadpool(self._serve, protocol, api_request, caller,
                                                    label)
        except Refusal as refusal:
            reply = protocol.refusal(refusal, request_id)
        except AuthError as exc:
            kind = SIGNATURE if exc.code == "SignatureDoesNotMatch" else AUTH
            reply = protocol.refusal(Refusal(kind, exc.message), request_id)
        except ApiError as exc:
            reply = protocol.api_error(exc, request_id)
        except Exception as exc:  # noqa: BLE001 - every failure gets an answer
            if _disk_full(exc):
                log.error("request %s (%s:%s): the disk is full: %s", request_id, *label, exc)
                reply = protocol.refusal(Refusal(UNAVAILABLE, "The server has no space left on "
                                                 "its disk for this request; try again later"),
                                         request_id)
            else:
                log.exception("request %s (%s:%s) failed", request_id, *label)
                reply = protocol.refusal(Refusal(INTERNAL, "An internal error has occurred; the "
                                                 "server log has details under request "
                                                 f"{request_id}"), request_id)
        elapsed = time.monotonic() - started
        log.info("%s:%s %s %s %d %.1fms", label[0], label[1], request_id, access_key,
                 reply.status, elapsed * 1000)
        self.metrics.observe(label[0], label[1], reply.status, elapsed)
        headers = {"x-amzn-RequestId": request_id, "Server": "vmimport", **reply.headers}
        if protocol.service == "s3":
            headers["x-amz-request-id"] = request_id
        if streamed is not None and not await streamed.drain(MAX_BODY):
            # The rest of a refused body is still on the connection: it cannot be reused.
            headers["Connection"] = "close"
        if not isinstance(reply.body, bytes):
            if request.method == "HEAD":
                reply.body.close()
                return Response(b"", reply.status, headers=headers)
            return StreamingResponse(self._streamed(reply.body), reply.status, headers=headers)
        return Response(reply.body, reply.status, headers=headers)

    async def _streamed(self, chunks):
        """A streamed reply's chunks read on the transfer threads (S3 GetObject), not on the
        four API handler threads, which a download's every chunk would otherwise queue for."""
        done = object()
        try:
            while (chunk := await anyio.to_thread.run_sync(
                    next, chunks, done, limiter=self._transfers())) is not done:
                yield chunk
        finally:
            chunks.close()

    def _transfers(self) -> anyio.CapacityLimiter:
        if self.transfer_limiter is None:
            self.transfer_limiter = anyio.CapacityLimiter(self.settings.s3_transfer_threads)
        return self.transfer_limiter

    async def _serve_streamed(self, body: ConnectionBody, protocol: Protocol,
                              api_request: ApiRequest, caller: Principal, signed: Caller,
                              label: list[str]) -> Reply:
        """``_serve`` on a transfer thread, the handler reading the body from the connection
        a piece at a time (``anyio.from_thread``): never the whole body in memory."""
        def serve() -> Reply:
            api_request.stream = RequestBody(lambda: anyio.from_thread.run(body.next_piece),
                                             signed, api_request.headers)
            return self._serve(protocol, api_request, caller, label)

        return await anyio.to_thread.run_sync(serve, limiter=self._transfers())

    def _authenticate(self, request: Request, query, body: bytes | None
                      ) -> tuple[Principal, Caller]:
        """Signature, scope and token: on the event loop for configured keys, linear in the
        request's size (bounded above), so that a bad request costs no handler thread. Returns
        who signed, and the signature's details (S3 bodies verify their chunks with them)."""
        scope = request.scope
        issued: list[sts.TemporaryKey] = []

        def lookup(access_key: str):
            cred = self.credentials.get(access_key)
            if cred is not None:
                return cred.secret_key, cred.account_id
            temporary = sts.find_temporary(self.db, self.settings, access_key)
            if temporary is None:
                return None
            issued.append(temporary)
            return temporary.secret, temporary.principal.account_id

        caller = verify_request(
            request.method, scope.get("raw_path", scope["path"].encode()).decode("latin-1"),
            scope.get("query_string", b"").decode("latin-1"), request.headers, body,
            lookup, pairs=query, check_scope=self._check_scope)
        if not issued:
            if caller.session_token is not None:
                raise Refusal(TOKEN, "The security token included in the request is invalid: "
                              f"{caller.access_key} is a long-term access key; sign with it "
                              "and no X-Amz-Security-Token, or with the temporary "
                              "credentials the token was issued with")
            return key_principal(caller.access_key, caller.account_id), caller
        temporary = issued[0]
        # The token must be the one issued with this key (a key alone is not a credential).
        if not temporary.token_matches(caller.session_token):
            raise Refusal(TOKEN, "The security token included in the request is invalid")
        if temporary.expired():
            raise Refusal(EXPIRED, "The security token included in the request is expired")
        return temporary.principal, caller

    def _authorize(self, protocol: Protocol, action: str, caller: Principal) -> None:
        """Configured keys (and their sessions): the key's shell-style ``actions`` patterns.
        Assumed roles: the role's inline policies, evaluated for ``<service>:<Action>`` under
        IAM's action names (``iam_actions.py``)."""
        if (protocol.service, action) in _ALWAYS_ALLOWED:
            return
        if caller.role_id is not None:
            permission = iam_action(protocol.service, action)  # S3: ListObjectsV2 -> ListBucket
            decision = sts.role_allows(self.db, caller.role_id,
                                       f"{protocol.service}:{permission}")
            if not decision.allowed:
                raise protocol.denied(permission, caller.arn, decision.reason)
            return
        key = self.credentials.get(caller.source_access_key)
        if key is None:  # a session of a key since removed from the configuration
            raise protocol.denied(action, f"access key {caller.access_key}",
                                  f"the key it was issued for, {caller.source_access_key}, "
                                  "is no longer configured")
        if not any(fnmatch.fnmatchcase(action, p) for p in key.actions):
            raise protocol.denied(action, f"access key {caller.access_key}")

    def _serve(self, protocol: Protocol, request: ApiRequest, caller: Principal,
               label: list[str]) -> Reply:
        """Everything after authentication, on a handler thread."""
        operation = protocol.operation(request)
        label[1] = operation.name
        handler = protocol.handler(operation)
        params = protocol.parse(operation, request)
        self._authorize(protocol, operation.name, caller)
        dry_run = protocol.dry_run(params)
        context = Context(account_id=caller.account_id, region=self.settings.region,
                          db=self.db, settings=self.settings, blocks=self.blocks,
                          caller=caller, dry_run=dry_run)
        result = handler(context, params)
        if dry_run:  # a call that changes nothing: it would have succeeded
            context.would_succeed()
        return protocol.reply(operation, result, request.request_id)


def _signed_with_temporary_key(request: Request) -> bool:
    match = (_SCOPE_KEY.search(request.headers.get("authorization", ""))
             or _SCOPE_KEY.search(request.scope.get("query_string", b"").decode("latin-1")))
    return bool(match) and sts.looks_temporary(match.group(1) or match.group(2) or "")


def _check_request_size(request: Request) -> None:
    headers = request.scope["headers"]
    if len(headers) > MAX_HEADERS:
        raise Refusal(INVALID, f"The request has {len(headers)} headers; at most {MAX_HEADERS} "
                      "are accepted", 431)
    size = sum(len(name) + len(value) for name, value in headers)
    if size > MAX_HEADER_BYTES:
        raise Refusal(INVALID, f"The request's headers take {size} bytes; at most "
                      f"{MAX_HEADER_BYTES} are accepted", 431)
    if len(request.scope.get("query_string", b"")) > MAX_QUERY_BYTES:
        raise Refusal(INVALID, f"The query string is longer than {MAX_QUERY_BYTES} bytes; send "
                      "the parameters in a POST body", 414)


async def _read_body(request: Request) -> bytes:
    too_large = Refusal(INVALID, f"The request body is larger than {MAX_BODY} bytes", 413)
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > MAX_BODY:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _disk_full(exc: BaseException) -> bool:
    """Whether a failure comes from a full disk (the database's or the block store's)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(exc, sqlite3.OperationalError) and "disk is full" in str(exc):
            return True
        if type(exc).__name__ == "DiskFull":  # psycopg.errors.DiskFull (SQLSTATE 53100)
            return True
        exc = getattr(exc, "orig", None) or exc.__cause__ or exc.__context__
    return False


def create_app(settings: Settings, db: Database,
               rate_limiter: RateLimiter | SharedRateLimiter | None = None) -> Starlette:
    """``rate_limiter``: one shared with other API processes (``api.processes``); else this
    app's own."""
    load_models()
    api = Api(settings, db, rate_limiter)

    def door(methods: set[str] | None):
        """Requests signed for S3 may use any path and method; the others keep the routes
        of their own protocols (``methods``; None: no route, 404)."""
        async def endpoint(request: Request) -> Response:
            if api.signed_for(request) == "s3":
                return await api.handle(request)
            if methods is None:
                return PlainTextResponse("Not Found", 404)
            if request.method not in methods:
                return PlainTextResponse("Method Not Allowed", 405,
                                         headers={"Allow": ", ".join(sorted(methods))})
            return await api.handle(request)
        return endpoint

    api_door = door({"GET", "POST"})

    async def root(request: Request) -> Response:
        if api.signed_for(request) is None and wants_console(request):
            return to_console()  # a browser; API clients never ask for text/html
        return await api_door(request)

    def unsigned_page(page):
        """A page that needs no signature, on a path that S3 requests may also use (a
        bucket named ``console``): those still go to the API."""
        async def endpoint(request: Request) -> Response:
            service = api.signed_for(request)
            if service == "s3":
                return await api.handle(request)
            if service is not None:
                return PlainTextResponse("Not Found", 404)
            if request.method not in ("GET", "HEAD"):
                return PlainTextResponse("Method Not Allowed", 405, headers={"Allow": "GET"})
            return await page(request)
        return endpoint

    async def health_page(request: Request) -> Response:
        return await health(request, db)

    async def ready_page(request: Request) -> Response:
        return await ready(request, db, api.blocks)

    async def console_page(request: Request) -> Response:
        return console_file(request.path_params.get("name", ""))

    async def console_root(request: Request) -> Response:
        return to_console()

    every_method = ["GET", "HEAD", "POST", "PUT", "DELETE"]
    routes = [
        Route("/", root, methods=every_method),
        Route("/health", unsigned_page(health_page), methods=every_method),
        Route("/_health", unsigned_page(health_page), methods=every_method),
        Route("/_ready", unsigned_page(ready_page), methods=every_method),
        Route("/metrics", unsigned_page(api.metrics.page), methods=every_method),
        Route("/console", unsigned_page(console_root), methods=every_method),
        Route("/console/{name:path}", unsigned_page(console_page), methods=every_method),
        Route("/snapshots/{rest:path}", door({"GET", "POST", "PUT"}), methods=every_method),
        Route("/{rest:path}", door(None), methods=every_method),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app):
        # run_in_threadpool draws on anyio's default limiter (see Settings.api_threads)
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.api_threads
        yield

    return Starlette(routes=routes, lifespan=lifespan)
