"""AWS Signature Version 4 verification for the front door (ec2, ebs, iam, kms, ...).

The signature is recomputed with botocore's own signer (``SigV4Auth`` / ``SigV4QueryAuth``), fed
exactly what the client signed: the raw path, the query string, the headers it listed in
SignedHeaders with the values we received, and the body we received. Using the client library's
code for the canonical request is what keeps us byte-compatible with boto3 and the AWS CLI.

``path`` must be the path as the client sent it, percent-encoding preserved (ASGI
``scope["raw_path"]``), and ``query_string`` the raw query without the ``?`` (ASGI
``scope["query_string"]`` decoded as latin-1). The ``host`` header must reach us unchanged.
Secrets never appear in messages or logs.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import NamedTuple
from urllib.parse import unquote_plus

from botocore.auth import (SIGV4_TIMESTAMP, UNSIGNED_PAYLOAD, S3SigV4Auth, S3SigV4QueryAuth,
                           SigV4Auth, SigV4QueryAuth)
from botocore.awsrequest import AWSRequest
from botocore.compat import HTTPHeaders
from botocore.credentials import Credentials

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_PRESIGN_EXPIRES = 604800  # 7 days, the SigV4 limit
_HEX64 = re.compile(r"[0-9a-f]{64}")
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
SIGNED_STREAMING = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
# Payload modes of a streamed (S3) body; the body itself is checked as it is read.
STREAMED_MODES = (UNSIGNED_PAYLOAD, SIGNED_STREAMING, UNSIGNED_TRAILER)
_AMZ_DATE = re.compile(r"[0-9]{8}T[0-9]{6}Z")  # strptime alone accepts 1-digit months etc.
_NO_AUTH = "The request has no Authorization header or X-Amz-Signature query parameter (SigV4 is required)"
_MISMATCH = ("The request signature we calculated does not match the signature you provided. "
             "Check your AWS Secret Access Key and signing method.")


@dataclass(frozen=True)
class Caller:
    access_key: str
    account_id: str
    region: str   # from the credential scope; the caller decides whether it is acceptable
    service: str  # from the credential scope: "ec2", "ebs", "iam", "kms", ...
    # False when the client sent X-Amz-Content-SHA256: UNSIGNED-PAYLOAD, which only the services
    # in ``unsigned_payload_services`` accept: the body then needs a check of its own.
    payload_signed: bool = True
    # X-Amz-Security-Token (header or presigned query), signed like the rest; whether the server
    # issued it is the front door's question.
    session_token: str | None = None
    # Streamed bodies (S3): the X-Amz-Content-SHA256 the signature covers (a hex SHA-256 the
    # body must match, or one of STREAMED_MODES), and for signed aws-chunked bodies the key
    # that verifies each chunk's signature.
    content_sha256: str | None = None
    chunk_signing: "ChunkSigning | None" = None


@dataclass(frozen=True, repr=False)
class ChunkSigning:
    """What verifies the signature of each aws-chunked chunk: each one signs its bytes and the
    signature before it, seeded by the request's own signature."""

    signing_key: bytes
    timestamp: str
    scope: str
    seed_signature: str

    def chunk_signature(self, previous: str, chunk_sha256: str) -> str:
        to_sign = "\n".join(("AWS4-HMAC-SHA256-PAYLOAD", self.timestamp, self.scope, previous,
                             EMPTY_SHA256, chunk_sha256))
        return hmac.new(self.signing_key, to_sign.encode(), hashlib.sha256).hexdigest()


@functools.lru_cache(maxsize=1024)
def signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    # Cached: four HMACs per request otherwise, and a key signs every request of its day.
    key = ("AWS4" + secret_key).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


class AuthError(Exception):
    """An authentication failure; ``code`` is the EC2 error code to return."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def _fail(message: str) -> AuthError:
    return AuthError("AuthFailure", message)


class _Verifier:
    """Mixin over botocore's signer: sign exactly what the client listed, hash what we received.

    botocore's ``headers_to_sign`` drops a fixed blacklist (user-agent, ...) and invents ``host``
    from the URL; a verifier must instead use the client's SignedHeaders list verbatim, which is
    what ``request.headers`` holds here. ``payload`` reads the body we were given instead of
    re-serialising ``request.data``. ``canonical_headers`` groups the values in one pass:
    botocore's looks each name up with ``get_all``, a scan of every header, which made
    verification quadratic in the number of signed headers.
    """

    payload_hash = ""

    def headers_to_sign(self, request):
        return request.headers

    def payload(self, request):
        return self.payload_hash

    def canonical_headers(self, headers_to_sign):
        grouped: dict[str, list[str]] = {}
        for name, value in headers_to_sign.items():
            grouped.setdefault(name.lower(), []).append(self._header_value(value))
        return "\n".join(f"{name}:{','.join(grouped[name])}" for name in sorted(grouped))

    def signature(self, string_to_sign, request):
        key = signing_key(self.credentials.secret_key, request.context["timestamp"][:8],
                          self._region_name, self._service_name)
        return hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


class _HeaderVerifier(_Verifier, SigV4Auth):
    pass


class _QueryVerifier(_Verifier, SigV4QueryAuth):
    pass


class _S3HeaderVerifier(_Verifier, S3SigV4Auth):
    """S3 signs the path as sent (no normalisation, no double encoding)."""


class _S3QueryVerifier(_Verifier, S3SigV4QueryAuth):
    pass


def _multi_items(headers: Mapping[str, str]) -> dict[str, list[str]]:
    # starlette Headers keeps repeated headers in multi_items(); botocore joins them with ",".
    items = headers.multi_items() if hasattr(headers, "multi_items") else headers.items()
    out: dict[str, list[str]] = {}
    for name, value in items:
        out.setdefault(name.lower(), []).append(value)
    return out


class QueryEncodingError(ValueError):
    """A query string (or form body) that is not UTF-8 percent-encoding."""


def decode_query(query_string: str) -> list[tuple[str, str]]:
    """The query string's (name, value) pairs, decoded once for both the signature and the
    parameters, so that what was verified is exactly what is served.

    botocore re-encodes the pairs with the SigV4 unreserved set ('-_.~') and sorts them, the
    canonical form AWS computes whatever encoding the client used on the wire. '+' means a space,
    as in the parameters (form encoding): SDKs send a plus as '%2B' and sign it so, and a '+'
    put in its place re-encodes as '%20' and no longer verifies.
    """
    pairs = []
    for part in query_string.split("&"):
        if part:
            key, _, value = part.partition("=")
            try:
                pairs.append((unquote_plus(key, errors="strict"), unquote_plus(value, errors="strict")))
            except UnicodeDecodeError:
                raise QueryEncodingError("The query string is not valid UTF-8 percent-encoding") from None
    return pairs


def _parse_authorization(value: str) -> dict[str, str]:
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise _fail(f"Unsupported Authorization algorithm '{algorithm[:40]}': only {ALGORITHM} (SigV4) is accepted")
    fields = {}
    for item in rest.split(","):
        key, sep, val = item.strip().partition("=")
        if sep:
            fields[key] = val
    missing = [k for k in ("Credential", "SignedHeaders", "Signature") if not fields.get(k)]
    if missing:
        raise _fail(f"IncompleteSignature: Authorization header requires {', '.join(missing)} "
                    f"(expected '{ALGORITHM} Credential=..., SignedHeaders=..., Signature=...')")
    return fields


def _parse_amz_date(value: str) -> datetime:
    try:
        if _AMZ_DATE.fullmatch(value):
            return datetime.strptime(value, SIGV4_TIMESTAMP).replace(tzinfo=timezone.utc)
    except ValueError:
        pass
    raise _fail(f"X-Amz-Date '{value[:40]}' must be in the ISO 8601 basic format yyyyMMdd'T'HHmmss'Z'") from None


def _parse_scope(credential: str, timestamp: str) -> tuple[str, str, str]:
    parts = credential.split("/")
    if len(parts) != 5 or not all(parts):
        raise _fail(f"Credential '{credential[:200]}' is malformed: expected "
                    "<access-key>/<yyyymmdd>/<region>/<service>/aws4_request")
    access_key, date, region, service, terminator = parts
    if terminator != "aws4_request":
        raise _fail(f"Credential should be scoped with a valid terminator: 'aws4_request', not '{terminator}'")
    if date != timestamp[:8]:
        raise _fail(f"Credential should be scoped to a valid date: '{date}' does not match "
                    f"the request date {timestamp[:8]}")
    return access_key, region, service


class _Auth(NamedTuple):
    credential: str
    signed: list[str]
    signature: str
    timestamp: str         # yyyymmddThhmmssZ, as it enters the string to sign
    when: datetime
    date_header: str | None  # header the date came from (header auth only)
    expires: int | None      # X-Amz-Expires (presigned only)


def _read_presigned(query: dict[str, str]) -> _Auth:
    if query.get("X-Amz-Algorithm") != ALGORITHM:
        raise _fail(f"X-Amz-Algorithm must be {ALGORITHM}")
    names = ("X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders")
    missing = [k for k in names if not query.get(k)]
    if missing:
        raise _fail(f"IncompleteSignature: presigned request is missing {', '.join(missing)}")
    expires = int(query["X-Amz-Expires"]) if re.fullmatch(r"[0-9]{1,7}", query["X-Amz-Expires"]) else 0
    if not 1 <= expires <= MAX_PRESIGN_EXPIRES:
        raise _fail(f"X-Amz-Expires must be an integer between 1 and {MAX_PRESIGN_EXPIRES} seconds")
    return _Auth(query["X-Amz-Credential"], query["X-Amz-SignedHeaders"].split(";"), query["X-Amz-Signature"],
                 query["X-Amz-Date"], _parse_amz_date(query["X-Amz-Date"]), None, expires)


def _read_header_auth(authorization: str, received: dict[str, list[str]]) -> _Auth:
    fields = _parse_authorization(authorization)
    # X-Amz-Date wins over Date, as in botocore's signer.
    if "x-amz-date" in received:
        date_header, timestamp = "x-amz-date", received["x-amz-date"][0]
        when = _parse_amz_date(timestamp)
    elif "date" in received:
        date_header = "date"
        try:
            when = parsedate_to_datetime(received["date"][0]).astimezone(timezone.utc)
        except (TypeError, ValueError):
            raise _fail("The Date header is not a valid RFC 1123 date") from None
        timestamp = when.strftime(SIGV4_TIMESTAMP)
    else:
        raise _fail("IncompleteSignature: the request must carry an X-Amz-Date or Date header")
    return _Auth(fields["Credential"], fields["SignedHeaders"].split(";"), fields["Signature"],
                 timestamp, when, date_header, None)


def _check_signed_headers(auth: _Auth, received: dict[str, list[str]]) -> None:
    if "host" not in auth.signed:
        raise _fail("SignedHeaders must include 'host'")
    if auth.date_header and auth.date_header not in auth.signed:
        raise _fail(f"SignedHeaders must include '{auth.date_header}', the header the request date came from")
    for name in auth.signed:
        if name not in received:
            raise _fail(f"Header '{name[:60]}' is listed in SignedHeaders but absent from the request")
    # x-amz-* headers steer the operation (X-Amz-Target picks the KMS action): refuse unsigned ones.
    # x-amz-content-sha256 is exempt: its value enters the canonical request anyway.
    signed = set(auth.signed)
    for name in received:
        if name.startswith("x-amz-") and name not in signed and name != "x-amz-content-sha256":
            raise _fail(f"Header '{name[:60]}' must be signed (add it to SignedHeaders)")


def _check_time(auth: _Auth, now: datetime, skew: timedelta) -> None:
    fmt = lambda d: d.strftime(SIGV4_TIMESTAMP)  # noqa: E731
    if auth.expires is not None:  # presigned: the URL's own validity window
        if now > auth.when + timedelta(seconds=auth.expires):
            raise _fail(f"Request has expired: signed at {auth.timestamp} for {auth.expires} s, now {fmt(now)}")
        if auth.when > now + skew:
            raise _fail(f"Request is not yet valid: X-Amz-Date {auth.timestamp} is later than {fmt(now + skew)}")
        return
    minutes = f"{int(skew.total_seconds() // 60)} min."
    if auth.when < now - skew:
        raise _fail(f"Signature expired: {auth.timestamp} is now earlier than {fmt(now - skew)} ({fmt(now)} - {minutes})")
    if auth.when > now + skew:
        raise _fail(f"Signature not yet current: {auth.timestamp} is still later than {fmt(now + skew)} "
                    f"({fmt(now)} + {minutes})")


def _streamed_payload_hash(received: dict[str, list[str]], presigned: bool) -> str:
    """The X-Amz-Content-SHA256 of a body that is checked later, as it is read (S3)."""
    declared = received.get("x-amz-content-sha256", [None])[0]
    if declared is None:
        if presigned:
            return UNSIGNED_PAYLOAD  # what presigned S3 URLs sign
        raise AuthError("InvalidRequest", "Missing required header for this request: "
                        "x-amz-content-sha256")
    if declared in STREAMED_MODES or _HEX64.fullmatch(declared):
        return declared
    raise AuthError("InvalidArgument", f"x-amz-content-sha256 '{declared[:70]}' is not a "
                    f"hex SHA-256 nor one of the payload modes served: {', '.join(STREAMED_MODES)}")


def _payload_hash(received: dict[str, list[str]], body: bytes, unsigned_ok: bool) -> tuple[str, bool]:
    """The hash that goes into the canonical request, and whether it covers the body.

    Like botocore's canonical_request: the X-Amz-Content-SHA256 value when sent, which must then be
    the real hash unless the client opted out with UNSIGNED-PAYLOAD (S3 only, as on AWS: elsewhere
    a captured request's body could be swapped); else sha256 of the body.
    """
    body_hash = hashlib.sha256(body or b"").hexdigest()
    declared = received.get("x-amz-content-sha256", [None])[0]
    if declared is None:
        return body_hash, True
    if declared == UNSIGNED_PAYLOAD:
        if not unsigned_ok:
            raise AuthError("SignatureDoesNotMatch", "X-Amz-Content-SHA256: UNSIGNED-PAYLOAD is accepted "
                            "by S3 only; this service needs the SHA-256 of the body signed")
        return declared, False
    if declared.startswith("STREAMING-"):
        raise _fail(f"Streaming (aws-chunked) payloads are not supported (X-Amz-Content-SHA256: {declared[:60]}); "
                    "send the body in one piece")
    if not hmac.compare_digest(declared.lower().encode(), body_hash.encode()):
        raise AuthError("SignatureDoesNotMatch",
                        "The provided 'x-amz-content-sha256' header does not match what was computed from the body.")
    return declared, True


def verify_request(method: str, path: str, query_string: str, headers: Mapping[str, str], body: bytes | None,
                   lookup_secret: Callable[[str], tuple[str, str] | None], now: datetime | None = None,
                   max_skew: timedelta = timedelta(minutes=15),
                   unsigned_payload_services: frozenset[str] = frozenset({"s3"}),
                   pairs: list[tuple[str, str]] | None = None,
                   check_scope: Callable[[str, str], None] | None = None) -> Caller:
    """Check a SigV4-signed request (Authorization header or presigned query) and return its caller.

    Linear in the request's size. ``pairs`` is ``decode_query(query_string)`` when the caller has
    it already; ``check_scope(region, service)`` raises ``AuthError`` for a credential scope the
    server does not answer for, before any key is looked up. ``body`` None means the body is
    streamed (S3): the caller checks it against ``Caller.content_sha256`` as it reads it."""
    now = now or datetime.now(timezone.utc)
    if now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    received = _multi_items(headers)
    if pairs is None:
        try:
            pairs = decode_query(query_string)
        except QueryEncodingError as exc:
            raise _fail(str(exc)) from None
    query = dict(reversed(pairs))  # first occurrence wins
    authorization = received.get("authorization", [None])[0]
    presigned = "X-Amz-Signature" in query
    if authorization is None and not presigned:
        raise _fail(_NO_AUTH)
    if authorization is not None and presigned:
        raise _fail("Only one auth mechanism allowed: Authorization header or X-Amz-Signature query parameter")
    auth = _read_presigned(query) if presigned else _read_header_auth(authorization, received)

    access_key, region, service = _parse_scope(auth.credential, auth.timestamp)
    if check_scope is not None:
        check_scope(region, service)
    signature = auth.signature.lower()
    if not _HEX64.fullmatch(signature):
        raise _fail("IncompleteSignature: Signature must be 64 hexadecimal characters")
    _check_signed_headers(auth, received)
    _check_time(auth, now, max_skew)  # before the key lookup: stale captures learn nothing about keys
    found = lookup_secret(access_key)
    if found is None:
        raise _fail("AWS was not able to validate the provided access credentials "
                    f"(unknown access key id '{access_key[:128]}')")
    secret_key, account_id = found
    if body is None:
        payload_hash = _streamed_payload_hash(received, presigned)
        payload_signed = payload_hash != UNSIGNED_PAYLOAD
    else:
        payload_hash, payload_signed = _payload_hash(received, body, service in unsigned_payload_services)

    # Rebuild the request as the client signed it: only the listed headers, values as received.
    # The URL's host is never used ("host" comes from the received header like any signed header);
    # botocore applies its own path rules to the raw path (dot-segment removal, then re-quoting: the
    # double encoding non-S3 services use), exactly as it did when the client signed.
    path = path.split("?", 1)[0]  # some ASGI servers leave the query in raw_path
    request = AWSRequest(method=method.upper(), url="http://sigv4.invalid/" + path.lstrip("/"))
    request.headers = HTTPHeaders()
    for name in auth.signed:
        for value in received[name]:
            request.headers[name] = value  # HTTPHeaders appends repeated names
    # Presigned: "the canonical query string must include all the query parameters except X-Amz-Signature".
    request.params = [(k, v) for k, v in pairs if not (presigned and k == "X-Amz-Signature")]
    request.context["timestamp"] = auth.timestamp

    if service == "s3":
        verifier = _S3QueryVerifier if presigned else _S3HeaderVerifier
    else:
        verifier = _QueryVerifier if presigned else _HeaderVerifier
    signer = verifier(Credentials(access_key, secret_key), service, region)
    signer.payload_hash = payload_hash
    expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    if not hmac.compare_digest(expected, signature):
        raise AuthError("SignatureDoesNotMatch", _MISMATCH)
    token = query.get("X-Amz-Security-Token") if presigned else received.get("x-amz-security-token", [None])[0]
    chunk_signing = None
    if payload_hash == SIGNED_STREAMING:
        chunk_signing = ChunkSigning(signing_key(secret_key, auth.timestamp[:8], region, service),
                                     auth.timestamp, "/".join(auth.credential.split("/")[1:]),
                                     signature)
    return Caller(access_key, account_id, region, service, payload_signed, token,
                  payload_hash if body is None else None, chunk_signing)
