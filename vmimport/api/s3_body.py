"""An S3 request body, pulled from the connection on the event loop (``ConnectionBody``) by
the handler's thread (``RequestBody``) and checked as it passes: the signed SHA-256,
aws-chunked framing and chunk signatures, ``Content-MD5`` and ``x-amz-checksum-*`` (header or
trailer). Only a piece (about 1 MiB) at a time is in memory.

Iterating a ``RequestBody`` yields the payload; the checks that need the whole body run after
the last chunk, before the iteration ends, so a handler that writes the chunks to a temp file
and publishes it only after the loop never publishes a body that failed a check.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import zlib
from typing import Callable, Iterator

from botocore.auth import UNSIGNED_PAYLOAD

from vmimport.service.errors import S3Error

from .aws_chunked import AwsChunkedDecoder, ChunkedError
from .sigv4 import SIGNED_STREAMING, UNSIGNED_TRAILER, Caller

# A streamed body is handed to its handler in pieces of about this size.
STREAM_PIECE = 1024 * 1024
CHECKSUM_ALGORITHMS = ("crc32", "crc32c", "crc64nvme", "sha1", "sha256")


class _Crc:
    """A running CRC with hashlib's update/digest; S3 sends it big-endian, base64."""

    def __init__(self, function: Callable[[bytes, int], int], width: int):
        self._function, self._width, self.value = function, width, 0

    def update(self, data) -> None:
        self.value = self._function(data, self.value)

    def digest(self) -> bytes:
        return self.value.to_bytes(self._width, "big")


_CRCS = {"crc32": (zlib.crc32, 4)}
try:  # CRC32C and CRC64NVME by awscrt (a dependency; the C library botocore uses for them)
    from awscrt import checksums as _crt
    _CRCS.update(crc32c=(_crt.crc32c, 4), crc64nvme=(_crt.crc64nvme, 8))
except ImportError:  # an install without it still serves the other checksums
    pass


def _checksum(algorithm: str):
    if algorithm in _CRCS:
        return _Crc(*_CRCS[algorithm])
    if algorithm in ("crc32c", "crc64nvme"):
        raise S3Error("NotImplemented", f"x-amz-checksum-{algorithm} needs the awscrt package, "
                      "which this server's installation lacks (scripts/setup installs it); "
                      "use CRC32, SHA1 or SHA256 meanwhile")
    return hashlib.new(algorithm)


class RequestBody:
    def __init__(self, read_raw: Callable[[], bytes], caller: Caller, headers):
        """``read_raw()`` returns the next bytes received, b"" at the end."""
        self._read_raw = read_raw
        self.mode = caller.content_sha256 or UNSIGNED_PAYLOAD
        self.size = 0
        self.md5_hex = ""
        self._md5 = hashlib.md5()
        self._raw_sha256 = hashlib.sha256() if self.mode not in (
            UNSIGNED_PAYLOAD, SIGNED_STREAMING, UNSIGNED_TRAILER) else None
        self._decoder = None
        self._decoded_length = None
        if self.mode in (SIGNED_STREAMING, UNSIGNED_TRAILER):
            self._decoder = AwsChunkedDecoder(caller.chunk_signing)
            declared = headers.get("x-amz-decoded-content-length")
            if declared is not None:
                if not declared.isdigit():
                    raise S3Error("InvalidArgument", "x-amz-decoded-content-length must be a "
                                  "number of bytes")
                self._decoded_length = int(declared)
        length = headers.get("content-length")
        # The body's size as announced (what a store it is forwarded to is told), if it is.
        self.declared_size = self._decoded_length if self._decoder else \
            (int(length) if length and length.isdigit() else None)
        self._content_md5 = self._expected_md5(headers.get("content-md5"))
        # Checksums named by header (their value given) or to come in the trailer.
        self._checksums: dict[str, tuple[object, str | None]] = {}
        for algorithm in CHECKSUM_ALGORITHMS:
            value = headers.get(f"x-amz-checksum-{algorithm}")
            if value is not None:
                self._checksums[algorithm] = (_checksum(algorithm), value)
        self._trailer = None
        for name in (headers.get("x-amz-trailer") or "").lower().split(","):
            name = name.strip()
            if not name:
                continue
            algorithm = name.removeprefix("x-amz-checksum-")
            if algorithm not in CHECKSUM_ALGORITHMS or self._decoder is None:
                raise S3Error("InvalidRequest", f"x-amz-trailer '{name[:60]}' is not served: "
                              "only an x-amz-checksum-* trailer of an aws-chunked body")
            self._trailer = algorithm
            self._checksums.setdefault(algorithm, (_checksum(algorithm), None))

    @staticmethod
    def _expected_md5(value: str | None) -> bytes | None:
        if value is None:
            return None
        try:
            digest = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            digest = b""
        if len(digest) != 16:
            raise S3Error("InvalidDigest", "The Content-MD5 you specified is not valid.")
        return digest

    def __iter__(self) -> Iterator[bytes]:
        while True:
            raw = self._read_raw()
            if not raw:
                break
            if self._raw_sha256 is not None:
                self._raw_sha256.update(raw)
            pieces = self._decode(raw) if self._decoder else [raw]
            for piece in pieces:
                self.size += len(piece)
                self._md5.update(piece)
                for checksum, _ in self._checksums.values():
                    checksum.update(piece)
                yield piece
        self._verify()

    def _decode(self, raw: bytes) -> list:
        try:
            return self._decoder.feed(raw)
        except ChunkedError as bad:
            raise S3Error(bad.code, bad.message) from None

    def read_all(self, limit: int) -> bytes:
        """A small body (an XML document) whole; refused past ``limit`` bytes."""
        data = bytearray()
        for piece in self:
            data += piece
            if len(data) > limit:
                raise S3Error("MalformedXML", f"The XML document is larger than {limit} bytes")
        return bytes(data)

    def _verify(self) -> None:
        if self._raw_sha256 is not None and not hmac.compare_digest(
                self._raw_sha256.hexdigest(), self.mode.lower()):
            raise S3Error("XAmzContentSHA256Mismatch", "The provided 'x-amz-content-sha256' "
                          "header does not match what was computed.")
        if self._decoder is not None:
            try:
                trailers = self._decoder.finish()
            except ChunkedError as bad:
                raise S3Error(bad.code, bad.message) from None
            if self._decoded_length is not None and self._decoded_length != self.size:
                raise S3Error("IncompleteBody", f"The aws-chunked body holds {self.size} bytes "
                              f"but x-amz-decoded-content-length said {self._decoded_length}")
            if self._trailer:
                value = trailers.get(f"x-amz-checksum-{self._trailer}")
                if value is None:
                    raise S3Error("InvalidRequest", f"The x-amz-checksum-{self._trailer} "
                                  "trailer announced by x-amz-trailer is missing")
                checksum, _ = self._checksums[self._trailer]
                self._checksums[self._trailer] = (checksum, value)
        digest = self._md5.digest()
        if self._content_md5 is not None and not hmac.compare_digest(digest, self._content_md5):
            raise S3Error("BadDigest", "The Content-MD5 you specified did not match what we "
                          "received.")
        for algorithm, (checksum, value) in self._checksums.items():
            if value is not None and base64.b64encode(checksum.digest()).decode() != value:
                raise S3Error("BadDigest", f"The {algorithm.upper()} you specified did not "
                              "match the calculated checksum.")
        self.md5_hex = digest.hex()


class ConnectionBody:
    """The connection's request body as its handler pulls it (``next_piece``), and what is
    left of it once the handler is done or refused it early (``drain``)."""

    def __init__(self, request):
        self._chunks = request.stream()
        self.finished = False
        self.started = False
        self._expects_continue = request.headers.get("expect", "").lower() == "100-continue"

    async def next_piece(self) -> bytes:
        self.started = True
        piece = bytearray()
        async for chunk in self._chunks:
            piece += chunk
            if len(piece) >= STREAM_PIECE:
                return bytes(piece)
        self.finished = True
        return bytes(piece)

    async def drain(self, limit: int) -> bool:
        """Read and drop up to ``limit`` unread bytes; whether the body is now all read."""
        if self._expects_continue and not self.started:
            return False  # the client waits for "100 Continue": better close than ask for it
        dropped = 0
        while not self.finished and dropped <= limit:
            dropped += len(await self.next_piece())
        return self.finished
