"""The aws-chunked decoder fed the way a connection delivers bytes: split anywhere."""

from __future__ import annotations

import hashlib
import random

import pytest

from vmimport.api.aws_chunked import AwsChunkedDecoder, ChunkedError
from vmimport.api.sigv4 import ChunkSigning

SIGNING = ChunkSigning(b"k" * 32, "20240506T070809Z", "20240506/us-east-1/s3/aws4_request",
                       "0" * 64)


def signed_body(data: bytes, size: int) -> bytes:
    out, previous = [], SIGNING.seed_signature
    for piece in [data[i:i + size] for i in range(0, len(data), size)] + [b""]:
        previous = SIGNING.chunk_signature(previous, hashlib.sha256(piece).hexdigest())
        out.append(f"{len(piece):x};chunk-signature={previous}\r\n".encode() + piece + b"\r\n")
    return b"".join(out)


def decode(body: bytes, signing=None, seed: int = 0) -> tuple[bytes, dict]:
    decoder, rng, out, pos = AwsChunkedDecoder(signing), random.Random(seed), [], 0
    while pos < len(body):
        step = rng.randint(1, 50)
        out += decoder.feed(body[pos:pos + step])
        pos += step
    return b"".join(bytes(p) for p in out), decoder.finish()


@pytest.mark.parametrize("seed", range(5))
def test_signed_chunks_split_anywhere(seed):
    data = random.Random(seed).randbytes(5000)
    assert decode(signed_body(data, 777), SIGNING, seed) == (data, {})


def test_trailer_read():
    body = b"5\r\nhello\r\n0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n"
    assert decode(body) == (b"hello", {"x-amz-checksum-crc32": "AAAAAA=="})


@pytest.mark.parametrize("body,code", [
    (b"5\r\nhello\r\n", "IncompleteBody"),                  # no final chunk
    (b"5\r\nhelloX\r\n0\r\n\r\n", "IncompleteBody"),        # longer than declared
    (b"zz\r\nhello\r\n0\r\n\r\n", "IncompleteBody"),        # not hex
    (b"5\nhello\r\n0\r\n\r\n", "IncompleteBody"),           # bare LF
    (b"0\r\n\r\nmore", "IncompleteBody"),                   # bytes after the end
    (b"f" * 5000 + b"\r\n", "IncompleteBody"),              # endless header line
])
def test_bad_framing(body, code):
    with pytest.raises(ChunkedError) as info:
        decode(body)
    assert info.value.code == code


def test_reordered_signed_chunks_refused():
    data = bytes(range(256)) * 8
    body = signed_body(data, 1024)
    first, second = body.index(b"400;"), body.index(b"400;", 10)
    swapped = body[second:body.index(b"0;")] + body[first:second] + body[body.index(b"0;"):]
    with pytest.raises(ChunkedError) as info:
        decode(swapped, SIGNING)
    assert info.value.code == "SignatureDoesNotMatch"
