"""The aws-chunked body framing, decoded incrementally with bounded memory.

Each chunk is ``<hex size>[;chunk-signature=<sig>]\\r\\n<bytes>\\r\\n``; a zero-size chunk ends
the data, then come trailer lines ``name:value\\r\\n`` and an empty line. With a ``signing``
(``STREAMING-AWS4-HMAC-SHA256-PAYLOAD``) every chunk's signature, the last empty one included,
is checked against its bytes and the signature before it.
"""

from __future__ import annotations

import hashlib
import hmac

from .sigv4 import ChunkSigning

MAX_LINE = 4096             # a chunk header or trailer line (a signature line is ~90 bytes)
MAX_CHUNK = 1 << 40
MAX_TRAILERS = 16


class ChunkedError(Exception):
    """A body that is not valid aws-chunked; ``code`` is the S3 code to answer."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class AwsChunkedDecoder:
    def __init__(self, signing: ChunkSigning | None = None):
        self.signing = signing
        self.previous_signature = signing.seed_signature if signing else ""
        self.trailers: dict[str, str] = {}
        self.done = False
        self._line = bytearray()
        self._state = "header"     # header | data | data-end | trailer
        self._remaining = 0
        self._chunk_signature = ""
        self._chunk_hash = None

    def feed(self, data: bytes) -> list[memoryview]:
        """The payload bytes contained in ``data`` (views into it)."""
        out: list[memoryview] = []
        view = memoryview(data)
        pos = 0
        while pos < len(view):
            if self.done:
                raise ChunkedError("IncompleteBody", "Bytes follow the end of the aws-chunked "
                                   "body")
            if self._state == "data":
                take = min(self._remaining, len(view) - pos)
                piece = view[pos:pos + take]
                if self._chunk_hash is not None:
                    self._chunk_hash.update(piece)
                out.append(piece)
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._end_chunk()
                continue
            newline = data.find(b"\n", pos)
            end = len(view) if newline < 0 else newline + 1
            self._line += view[pos:end]
            pos = end
            if len(self._line) > MAX_LINE:
                raise ChunkedError("IncompleteBody", "An aws-chunked header line is longer "
                                   f"than {MAX_LINE} bytes")
            if newline >= 0:
                line = bytes(self._line)
                self._line.clear()
                if not line.endswith(b"\r\n"):
                    raise ChunkedError("IncompleteBody", "aws-chunked lines end with CRLF")
                self._line_done(line[:-2])
        return out

    def _line_done(self, line: bytes) -> None:
        if self._state == "data-end":
            if line:
                raise ChunkedError("IncompleteBody", "An aws-chunked chunk is longer than "
                                   "its declared size")
            self._state = "header"
        elif self._state == "header":
            self._chunk_header(line)
        elif not line:  # the empty line after the trailers
            self.done = True
        else:
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep or len(self.trailers) >= MAX_TRAILERS:
                raise ChunkedError("IncompleteBody", "A malformed aws-chunked trailer line")
            self.trailers[name.strip().lower()] = value.strip()

    def _chunk_header(self, line: bytes) -> None:
        size_text, _, extension = line.decode("latin-1").partition(";")
        try:
            size = int(size_text, 16) if 0 < len(size_text) <= 12 else -1
        except ValueError:
            size = -1
        if not 0 <= size <= MAX_CHUNK:
            raise ChunkedError("IncompleteBody", f"Invalid aws-chunked chunk size "
                               f"'{size_text[:20]}'")
        if self.signing:
            name, _, signature = extension.partition("=")
            if name != "chunk-signature" or len(signature) != 64:
                raise ChunkedError("SignatureDoesNotMatch", "Each chunk of a "
                                   "STREAMING-AWS4-HMAC-SHA256-PAYLOAD body needs a "
                                   "chunk-signature")
            self._chunk_signature = signature.lower()
            self._chunk_hash = hashlib.sha256()
        self._remaining = size
        if size:
            self._state = "data"
        else:
            self._end_chunk()
            self._state = "trailer"

    def _end_chunk(self) -> None:
        if self.signing:
            expected = self.signing.chunk_signature(self.previous_signature,
                                                    self._chunk_hash.hexdigest())
            if not hmac.compare_digest(expected, self._chunk_signature):
                raise ChunkedError("SignatureDoesNotMatch", "The request signature we "
                                   "calculated does not match the signature you provided "
                                   "(an aws-chunked chunk-signature).")
            self.previous_signature = expected
        if self._state == "data":
            self._state = "data-end"

    def finish(self) -> dict[str, str]:
        """The trailers, once the whole body was fed; IncompleteBody if it ended early."""
        if not self.done:
            raise ChunkedError("IncompleteBody", "The aws-chunked body ended before its final "
                               "zero-size chunk and trailer")
        return self.trailers
