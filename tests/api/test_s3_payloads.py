"""S3 payload modes on the wire, built by hand from the SigV4 spec: signed aws-chunked
(every chunk signature checked), unsigned aws-chunked with a checksum trailer, a signed body
whose SHA-256 does not match, checksum headers."""

from __future__ import annotations

import base64
import hashlib
import http.client
import uuid
import zlib

import pytest
from awscrt import checksums as crt_checksums
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from vmimport.api.sigv4 import ChunkSigning, signing_key

CHUNK = 64 * 1024


class _Signer(S3SigV4Auth):
    """botocore's S3 signer, told which X-Amz-Content-SHA256 to sign."""

    content_sha256 = ""

    def payload(self, request):
        return self.content_sha256


def signed_put(server, bucket: str, key: str, content_sha256: str, headers: dict):
    request = AWSRequest(method="PUT", url=f"{server.endpoint}/{bucket}/{key}",
                         headers=dict(headers))
    signer = _Signer(Credentials("test", "test"), "s3", "us-east-1")
    signer.content_sha256 = content_sha256
    signer.add_auth(request)
    return request


def send(server, request, body: bytes) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        path = request.url.split(str(server.port), 1)[1]
        conn.putrequest(request.method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", f"127.0.0.1:{server.port}")  # as botocore signed it
        for name, value in request.headers.items():
            conn.putheader(name, value)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def chunk_signing(request) -> ChunkSigning:
    auth = request.headers["Authorization"]
    seed = auth.rsplit("Signature=", 1)[1]
    timestamp = request.context["timestamp"]
    return ChunkSigning(signing_key("test", timestamp[:8], "us-east-1", "s3"), timestamp,
                        f"{timestamp[:8]}/us-east-1/s3/aws4_request", seed)


def signed_chunks(data: bytes, signing: ChunkSigning, tamper: int | None = None) -> bytes:
    out, previous = [], signing.seed_signature
    pieces = [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)] + [b""]
    for n, piece in enumerate(pieces):
        signature = signing.chunk_signature(previous, hashlib.sha256(piece).hexdigest())
        previous = signature
        sent = piece
        if n == tamper:
            sent = bytes([piece[0] ^ 1]) + piece[1:]
        out.append(f"{len(piece):x};chunk-signature={signature}\r\n".encode() + sent + b"\r\n")
    return b"".join(out)


def stored(server, bucket: str, key: str) -> bytes | None:
    """The object's bytes as the server serves them, None when there is no such key (wherever
    the server keeps the bucket: its data dir, or the object store of test_s3_shared_payloads)."""
    try:
        return server.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "NoSuchKey":
            return None
        raise


@pytest.fixture(scope="module")
def bucket(server):
    name = f"payload-{uuid.uuid4().hex[:8]}"
    server.client("s3").create_bucket(Bucket=name)
    return name


def test_signed_aws_chunked(server, bucket):
    data = bytes(range(256)) * 1000  # 256000 bytes: several chunks and a short last one
    request = signed_put(server, bucket, "chunked", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", {
        "Content-Encoding": "aws-chunked", "X-Amz-Decoded-Content-Length": str(len(data))})
    status, payload = send(server, request, signed_chunks(data, chunk_signing(request)))
    assert status == 200, payload
    assert stored(server, bucket, "chunked") == data


@pytest.mark.parametrize("tamper", [1, 2])  # a middle chunk, the last chunk of data
def test_wrong_chunk_signature_refused(server, bucket, tamper):
    data = b"z" * (CHUNK * 2 + 5)
    request = signed_put(server, bucket, "tampered", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", {
        "Content-Encoding": "aws-chunked", "X-Amz-Decoded-Content-Length": str(len(data))})
    status, payload = send(server, request, signed_chunks(data, chunk_signing(request),
                                                          tamper=tamper))
    assert status == 403 and b"<Code>SignatureDoesNotMatch</Code>" in payload
    assert stored(server, bucket, "tampered") is None


def trailer_body(data: bytes, name: str, value: str) -> bytes:
    pieces = [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)]
    return (b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in pieces)
            + f"0\r\n{name}:{value}\r\n\r\n".encode())


def reference_digest(algorithm: str, data: bytes) -> bytes:
    if algorithm == "crc32":
        return zlib.crc32(data).to_bytes(4, "big")
    if algorithm == "crc32c":
        return crt_checksums.crc32c(data).to_bytes(4, "big")
    if algorithm == "crc64nvme":
        return crt_checksums.crc64nvme(data).to_bytes(8, "big")
    return hashlib.new(algorithm, data).digest()


def test_reference_crcs_match_published_check_values():
    """The catalogue's check values (CRC of b"123456789"), so that the reference used
    below is itself checked."""
    assert reference_digest("crc32c", b"123456789").hex() == "e3069283"
    assert reference_digest("crc64nvme", b"123456789").hex() == "ae8b14860a799888"


@pytest.mark.parametrize("algorithm", ["crc32", "crc32c", "crc64nvme", "sha1", "sha256"])
def test_unsigned_trailer(server, bucket, algorithm):
    data = b"trailer " * 20000
    digest = reference_digest(algorithm, data)
    value = base64.b64encode(digest).decode()
    headers = {"Content-Encoding": "aws-chunked", "X-Amz-Trailer": f"x-amz-checksum-{algorithm}",
               "X-Amz-Decoded-Content-Length": str(len(data))}
    request = signed_put(server, bucket, f"t-{algorithm}", "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
                         headers)
    status, payload = send(server, request, trailer_body(data, f"x-amz-checksum-{algorithm}",
                                                         value))
    assert status == 200, payload
    assert stored(server, bucket, f"t-{algorithm}") == data
    wrong = base64.b64encode(bytes(len(digest))).decode()
    request = signed_put(server, bucket, f"bad-{algorithm}", "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
                         headers)
    status, payload = send(server, request, trailer_body(data, f"x-amz-checksum-{algorithm}",
                                                         wrong))
    assert status == 400 and b"<Code>BadDigest</Code>" in payload
    assert stored(server, bucket, f"bad-{algorithm}") is None


def test_signed_body_with_wrong_sha256(server, bucket):
    request = signed_put(server, bucket, "liar", hashlib.sha256(b"declared").hexdigest(), {})
    status, payload = send(server, request, b"actually sent")
    assert status == 400 and b"<Code>XAmzContentSHA256Mismatch</Code>" in payload
    assert stored(server, bucket, "liar") is None


def test_unsigned_payload(server, bucket):
    request = signed_put(server, bucket, "unsigned", "UNSIGNED-PAYLOAD", {})
    status, payload = send(server, request, b"no hash")
    assert status == 200, payload
    assert stored(server, bucket, "unsigned") == b"no hash"


def test_checksum_headers(server, bucket):
    s3 = server.client("s3")
    s3.put_object(Bucket=bucket, Key="sha", Body=b"abc", ChecksumAlgorithm="SHA256")
    data = b"checked"
    wrong = base64.b64encode(hashlib.sha1(b"other").digest()).decode()
    request = signed_put(server, bucket, "badsha1", hashlib.sha256(data).hexdigest(),
                         {"x-amz-checksum-sha1": wrong})
    status, payload = send(server, request, data)
    assert status == 400 and b"<Code>BadDigest</Code>" in payload
    for algorithm in ("crc32c", "crc64nvme"):
        right = base64.b64encode(reference_digest(algorithm, data)).decode()
        request = signed_put(server, bucket, algorithm, hashlib.sha256(data).hexdigest(),
                             {f"x-amz-checksum-{algorithm}": right})
        status, payload = send(server, request, data)
        assert status == 200, payload
        wrong = base64.b64encode(reference_digest(algorithm, b"other")).decode()
        request = signed_put(server, bucket, f"bad-{algorithm}",
                             hashlib.sha256(data).hexdigest(),
                             {f"x-amz-checksum-{algorithm}": wrong})
        status, payload = send(server, request, data)
        assert status == 400 and b"<Code>BadDigest</Code>" in payload
        assert stored(server, bucket, f"bad-{algorithm}") is None


@pytest.mark.parametrize("algorithm", ["CRC32C", "CRC64NVME"])
def test_boto3_checksum_algorithms(server, bucket, tmp_path, algorithm):
    """boto3 as users call it: a PutObject and a multipart upload_file with the algorithm."""
    from boto3.s3.transfer import TransferConfig
    s3 = server.client("s3")
    s3.put_object(Bucket=bucket, Key=f"put-{algorithm}", Body=b"small body",
                  ChecksumAlgorithm=algorithm)
    assert stored(server, bucket, f"put-{algorithm}") == b"small body"
    data = bytes(range(256)) * (12 * 4096)  # 12 MiB: two parts of the 8 MiB default
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    s3.upload_file(str(source), bucket, f"mpu-{algorithm}",
                   ExtraArgs={"ChecksumAlgorithm": algorithm},
                   Config=TransferConfig(multipart_threshold=8 << 20))
    assert stored(server, bucket, f"mpu-{algorithm}") == data


@pytest.mark.parametrize("algorithm", ["CRC32C", "CRC64NVME"])
def test_aws_cli_checksum_algorithm(server, bucket, tmp_path, algorithm):
    """aws s3 cp --checksum-algorithm, multipart (12 MiB in the CLI's 8 MiB parts)."""
    from .test_s3_objects import aws_cli
    data = bytes(range(251)) * (12 * 4096)
    source = tmp_path / "cli.bin"
    source.write_bytes(data)
    aws_cli(server, "s3", "cp", str(source), f"s3://{bucket}/cli-{algorithm}",
            "--checksum-algorithm", algorithm)
    assert stored(server, bucket, f"cli-{algorithm}") == data
