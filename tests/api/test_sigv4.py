"""SigV4 verification against requests signed by botocore / boto3 themselves."""

from __future__ import annotations

import datetime as dt
import hashlib
import socket
import threading
import time
from urllib.parse import urlsplit

import boto3
import botocore.session
import pytest
import uvicorn
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.responses import Response
from urllib3.util import parse_url

from vmimport.api.sigv4 import AuthError, Caller, decode_query, verify_request

ENDPOINT = "http://127.0.0.1:8773"
ACCOUNT = "123456789012"
KEYS = {"AKIDEXAMPLE": ("s3cr3t/Key+example", ACCOUNT)}


def lookup(access_key):
    return KEYS.get(access_key)


class _Captured(Exception):
    def __init__(self, request):
        self.request = request


def boto3_request(service, operation, endpoint=ENDPOINT, **params):
    """The prepared request boto3 would put on the wire (captured in before-send)."""
    client = boto3.client(service, region_name="eu-west-3", endpoint_url=endpoint,
                          aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key=KEYS["AKIDEXAMPLE"][0],
                          aws_session_token=params.pop("_token", None),
                          config=Config(retries={"max_attempts": 1}))

    def capture(request, **_):
        raise _Captured(request)

    client.meta.events.register("before-send", capture)
    with pytest.raises(_Captured) as info:
        getattr(client, operation)(**params)
    return info.value.request


def wire(request) -> dict:
    """verify_request kwargs for a prepared request, as an ASGI server would hand them to us."""
    url = urlsplit(request.url)
    raw = [(k.lower().encode(), v if isinstance(v, bytes) else v.encode()) for k, v in request.headers.items()]
    if not any(k == b"host" for k, _ in raw):  # urllib3 adds Host: lowercased, default port left out
        parsed = parse_url(request.url)
        raw.append((b"host", (parsed.host + (f":{parsed.port}" if parsed.port else "")).encode()))
    body = request.body or b""
    return dict(method=request.method, path=url.path or "/", query_string=url.query,
                headers=Headers(raw=raw), body=body if isinstance(body, bytes) else body.encode(),
                lookup_secret=lookup)


def date_of(args) -> dt.datetime:
    stamp = args["headers"].get("x-amz-date") or dict(p.split("=", 1) for p in args["query_string"].split("&"))["X-Amz-Date"]
    return dt.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc)


def with_header(args, name, value):
    raw = [(k, v) for k, v in args["headers"].raw if k != name.encode()] + [(name.encode(), value.encode())]
    return {**args, "headers": Headers(raw=raw)}


def expect(code, args, fragment="", **kw):
    with pytest.raises(AuthError) as info:
        verify_request(**{**args, **kw})
    assert info.value.code == code
    assert fragment in info.value.message
    assert KEYS["AKIDEXAMPLE"][0] not in str(info.value)
    return info.value


BOTO3_CASES = [
    ("ec2", "describe_images", {}),
    ("ec2", "describe_images", {"Filters": [{"Name": "name", "Values": ["my image *", "a+b/c=é"]}], "Owners": ["self"]}),
    ("ec2", "import_image", {
        "Description": "nested ~ params & spaces", "RoleName": "vmimport", "BootMode": "uefi",
        "DiskContainers": [{"Format": "vmdk", "UserBucket": {"S3Bucket": "b", "S3Key": "dir/disk 1.vmdk"}},
                           {"Format": "raw", "Url": "s3://b/k2"}],
        "LicenseSpecifications": [{"LicenseConfigurationArn": "arn:aws:lc:x"}],
        "TagSpecifications": [{"ResourceType": "import-image-task", "Tags": [{"Key": "a", "Value": "b"}]}],
        "ClientData": {"UploadStart": dt.datetime(2024, 1, 1), "UploadSize": 1.5, "Comment": "ü"}}),
    ("ec2", "describe_images", {"_token": "FwoGZXIvYXdzEXAMPLETOKEN//+="}),
    ("ebs", "list_snapshot_blocks", {"SnapshotId": "snap-0123456789abcdef0", "MaxResults": 100,
                                     "NextToken": "a b/c+d=e~f"}),
    ("ebs", "get_snapshot_block", {"SnapshotId": "snap-1", "BlockIndex": 7, "BlockToken": "tok/=+ en"}),
    ("ebs", "get_snapshot_block", {"SnapshotId": "snap 1/x%y", "BlockIndex": 0, "BlockToken": "t"}),  # label encoding
    ("ebs", "start_snapshot", {"VolumeSize": 8, "Description": "d", "ClientToken": "c"}),
    ("kms", "list_keys", {}),
    ("kms", "encrypt", {"KeyId": "alias/x", "Plaintext": b"\x00\x01binary"}),
    ("iam", "list_roles", {"PathPrefix": "/service role/"}),
]


@pytest.mark.parametrize("service,operation,params", BOTO3_CASES, ids=lambda c: c if isinstance(c, str) else "")
def test_boto3_requests_verify(service, operation, params):
    token = params.get("_token")
    caller = verify_request(**wire(boto3_request(service, operation, **params)))
    assert caller == Caller("AKIDEXAMPLE", ACCOUNT, "eu-west-3", service, True, token)


def test_boto3_on_default_https_port_and_path_prefix():
    args = wire(boto3_request("ec2", "describe_images", endpoint="https://EC2.Example.test/api/v1/"))
    assert verify_request(**args).service == "ec2"


def test_unsigned_payload_only_for_s3():
    # An unsigned body could be swapped in a captured request: only S3 (and services the caller
    # names) may opt out. boto3 sends EBS PutSnapshotBlock so (EBS checks its own checksum).
    args = wire(boto3_request("ebs", "put_snapshot_block", SnapshotId="snap-1", BlockIndex=3, BlockData=b"x" * 10,
                              DataLength=10, Checksum="abc", ChecksumAlgorithm="SHA256"))
    if "x-amz-content-sha256" not in args["headers"]:
        # botocore signing with awscrt (installed with vmimport, as in the AWS CLI v2) signs
        # the body's SHA-256 here: a signed body, which another body cannot replace
        assert verify_request(**args).payload_signed
        expect("SignatureDoesNotMatch", {**args, "body": b"x" * 9 + b"y"}, "does not match")
        return
    assert args["headers"]["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"
    expect("SignatureDoesNotMatch", args, "accepted by S3 only")
    ebs_ok = frozenset({"ebs"})
    assert verify_request(**args, unsigned_payload_services=ebs_ok).payload_signed is False
    verify_request(**{**args, "body": b"anything"}, unsigned_payload_services=ebs_ok)
    expect("AuthFailure", {**args, "headers": Headers(raw=[(k, v) for k, v in args["headers"].raw
                                                           if k != b"x-amz-data-length"])}, "x-amz-data-length",
           unsigned_payload_services=ebs_ok)
    # A signed EC2 request whose body was replaced and its hash header set to UNSIGNED-PAYLOAD.
    good = wire(boto3_request("ec2", "describe_images"))
    swapped = with_header({**good, "body": b"Action=DeregisterImage&ImageId=ami-1"},
                          "x-amz-content-sha256", "UNSIGNED-PAYLOAD")
    expect("SignatureDoesNotMatch", swapped, "accepted by S3 only")


def test_plus_for_percent_2b_no_longer_verifies():
    # The query is decoded once, '+' as a space, for the signature and the parameters alike: a
    # '+' put in place of the '%2B' the client signed changes the value and the signature.
    args = wire(boto3_request("ebs", "list_snapshot_blocks", SnapshotId="snap-1", NextToken="a+b"))
    assert "pageToken=a%2Bb" in args["query_string"]
    verify_request(**args)
    expect("SignatureDoesNotMatch", {**args, "query_string": args["query_string"].replace("a%2Bb", "a+b")})
    assert decode_query("a=x+y&b=x%2By") == [("a", "x y"), ("b", "x+y")]


def test_many_signed_headers_verify_in_linear_work(monkeypatch):
    # Counting work instead of timing it: botocore's canonical_headers looked every name up
    # with get_all (a scan of all headers); ours reads each header once.
    from email.message import Message
    calls = []
    original = Message.get_all
    monkeypatch.setattr(Message, "get_all", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    headers = {f"x-amz-meta-h{i}": str(i) for i in range(2000)}
    request = AWSRequest(method="POST", url=ENDPOINT + "/", data=b"Action=DescribeImages", headers=headers)
    SigV4Auth(Credentials("AKIDEXAMPLE", KEYS["AKIDEXAMPLE"][0]), "ec2", "us-east-1").add_auth(request)
    calls.clear()
    assert verify_request(**wire(request.prepare())).service == "ec2"
    assert len(calls) < 10, f"{len(calls)} get_all scans for 2000 signed headers"


def test_scope_check_runs_before_the_key_lookup(good):
    seen = []

    def refuse(region, service):
        seen.append((region, service))
        raise AuthError("AuthFailure", f"Credential should be scoped to a valid region, not '{region}'")

    looked_up = []
    err = expect("AuthFailure", {**good, "lookup_secret": lambda k: looked_up.append(k)}, "valid region",
                 check_scope=refuse)
    assert seen == [("eu-west-3", "ec2")] and looked_up == [] and "eu-west-3" in err.message


def sign(method="POST", url=ENDPOINT + "/", body=b"Action=DescribeImages&Version=2016-11-15", headers=None,
         secret=None, key="AKIDEXAMPLE", service="ec2", region="us-east-1"):
    request = AWSRequest(method=method, url=url, data=body, headers=headers or {})
    SigV4Auth(Credentials(key, secret or KEYS["AKIDEXAMPLE"][0]), service, region).add_auth(request)
    return request.prepare()


def presign(url=ENDPOINT + "/?Action=DescribeImages&Version=2016-11-15", expires=300, service="ec2"):
    request = AWSRequest(method="GET", url=url)
    SigV4QueryAuth(Credentials("AKIDEXAMPLE", KEYS["AKIDEXAMPLE"][0]), service, "us-east-1",
                   expires=expires).add_auth(request)
    return request.prepare()


def test_botocore_signed_request_with_content_sha256_and_date_header():
    body = b'{"a": 1}'
    args = wire(sign(body=body, headers={"X-Amz-Content-SHA256": hashlib.sha256(body).hexdigest(),
                                         "X-Amz-Target": "TrentService.ListKeys"}, service="kms"))
    assert verify_request(**args).service == "kms"
    expect("SignatureDoesNotMatch", args, "x-amz-content-sha256", body=b'{"a": 2}')
    # RFC 1123 Date header instead of X-Amz-Date: botocore signs "date" and we take the time from it.
    args = wire(sign(headers={"Date": "Mon, 01 Jan 2024 00:00:00 GMT"}))
    assert "x-amz-date" not in args["headers"] and "date;host" in args["headers"]["authorization"]
    assert verify_request(**args).region == "us-east-1"


def test_presigned_urls():
    args = wire(presign())
    assert args["query_string"].endswith("X-Amz-Signature=" + args["query_string"][-64:])
    assert verify_request(**args).service == "ec2"
    url = boto3.client("ec2", region_name="us-east-1", endpoint_url=ENDPOINT, aws_access_key_id="AKIDEXAMPLE",
                       aws_secret_access_key=KEYS["AKIDEXAMPLE"][0]).generate_presigned_url(
        "describe_images", Params={"ImageIds": ["ami-1"]}, ExpiresIn=60, HttpMethod="GET")  # default: model's POST
    split = urlsplit(url)
    args = wire(AWSRequest(method="GET", url=url).prepare())
    assert verify_request(**args).service == "ec2" and split.path == "/"
    signed_at = date_of(args)
    expect("AuthFailure", args, "Request has expired", now=signed_at + dt.timedelta(seconds=61))
    verify_request(**args, now=signed_at + dt.timedelta(seconds=59))
    expect("AuthFailure", args, "not yet valid", now=signed_at - dt.timedelta(minutes=16))
    expect("SignatureDoesNotMatch", {**args, "query_string": args["query_string"].replace("ami-1", "ami-2")})
    expect("SignatureDoesNotMatch", {**args, "method": "POST"})
    expect("AuthFailure", {**args, "query_string": args["query_string"].replace("X-Amz-Expires=60", "X-Amz-Expires=0")},
           "X-Amz-Expires")
    expect("AuthFailure", with_header(args, "authorization", "AWS4-HMAC-SHA256 x"), "Only one auth")


def test_presigned_with_session_token_and_raw_path_holding_the_query():
    request = AWSRequest(method="GET", url=ENDPOINT + "/snapshots/snap-1/blocks?maxResults=100")
    SigV4QueryAuth(Credentials("AKIDEXAMPLE", KEYS["AKIDEXAMPLE"][0], "tok/en+="), "ebs", "us-east-1").add_auth(request)
    args = wire(request.prepare())
    assert "X-Amz-Security-Token=tok%2Fen%2B%3D" in args["query_string"]
    assert verify_request(**args).service == "ebs"
    # Some ASGI servers put "?query" in raw_path too; it is ignored in favour of query_string.
    assert verify_request(**{**args, "path": args["path"] + "?" + args["query_string"]}).service == "ebs"
    expect("SignatureDoesNotMatch", {**args, "query_string": args["query_string"].replace("tok%2Fen", "tok%2Fex")})


# ---- failures -------------------------------------------------------------------------------

@pytest.fixture
def good():
    return wire(boto3_request("ec2", "import_image", Description="d", RoleName="vmimport",
                              DiskContainers=[{"Format": "vmdk", "Url": "s3://b/k"}]))


def test_wrong_secret():
    expect("SignatureDoesNotMatch", wire(sign(secret="not-the-secret")), "does not match the signature")


def test_unknown_key():
    err = expect("AuthFailure", wire(sign(key="AKIDUNKNOWN")), "not able to validate the provided access credentials")
    assert "AKIDUNKNOWN" in err.message


def test_tampered_body(good):
    expect("SignatureDoesNotMatch", {**good, "body": good["body"].replace(b"RoleName=vmimport", b"RoleName=admin")})


def test_tampered_signed_header(good):
    expect("SignatureDoesNotMatch", with_header(good, "content-type", "application/json"))
    expect("SignatureDoesNotMatch", with_header(good, "host", "127.0.0.1:9999"))
    # An unsigned header may change freely.
    verify_request(**with_header(good, "user-agent", "evil"))


def test_tampered_query_path_and_method():
    args = wire(boto3_request("ebs", "list_snapshot_blocks", SnapshotId="snap-1", MaxResults=100))
    expect("SignatureDoesNotMatch", {**args, "query_string": args["query_string"].replace("100", "101")})
    expect("SignatureDoesNotMatch", {**args, "query_string": args["query_string"] + "&extra=1"})
    expect("SignatureDoesNotMatch", {**args, "path": args["path"].replace("snap-1", "snap-2")})
    expect("SignatureDoesNotMatch", {**args, "method": "DELETE"})


def test_unsigned_x_amz_header_is_refused():
    args = wire(boto3_request("kms", "list_keys"))
    expect("AuthFailure", with_header(args, "x-amz-extra", "1"), "must be signed")


def test_body_hash_header_mismatch(good):
    expect("SignatureDoesNotMatch", with_header(good, "x-amz-content-sha256", "0" * 64), "x-amz-content-sha256")
    expect("AuthFailure", with_header(good, "x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"), "Streaming")


def test_expired_and_future_dates(good):
    signed_at = date_of(good)
    verify_request(**good, now=signed_at + dt.timedelta(minutes=14))
    verify_request(**good, now=signed_at - dt.timedelta(minutes=14))
    err = expect("AuthFailure", good, "Signature expired", now=signed_at + dt.timedelta(minutes=16))
    assert signed_at.strftime("%Y%m%dT%H%M%SZ") in err.message and "15 min." in err.message
    expect("AuthFailure", good, "Signature not yet current", now=signed_at - dt.timedelta(minutes=16))


def test_bad_scope(good):
    auth = good["headers"]["authorization"]
    day = good["headers"]["x-amz-date"][:8]
    expect("AuthFailure", with_header(good, "authorization", auth.replace(f"/{day}/", "/20000101/")), "valid date")
    expect("AuthFailure", with_header(good, "authorization", auth.replace("aws4_request", "aws5_request")), "terminator")
    expect("AuthFailure", with_header(good, "authorization", auth.replace("/eu-west-3/", "/")), "malformed")


def test_malformed_authorization(good):
    auth = good["headers"]["authorization"]
    expect("AuthFailure", with_header(good, "authorization", auth.split(", Signature=")[0]), "IncompleteSignature")
    expect("AuthFailure", with_header(good, "authorization", "AWS AKIDEXAMPLE:abc"), "only AWS4-HMAC-SHA256")
    expect("AuthFailure", with_header(good, "authorization", auth[:-4] + "zzzz"), "64 hexadecimal")
    expect("AuthFailure", with_header(good, "authorization", auth.replace("SignedHeaders=content-type;host;",
                                                                          "SignedHeaders=content-type;")), "'host'")
    expect("AuthFailure", with_header(good, "x-amz-date", "2024-01-01T00:00:00Z"), "ISO 8601")


def test_missing_auth(good):
    raw = [(k, v) for k, v in good["headers"].raw if k != b"authorization"]
    expect("AuthFailure", {**good, "headers": Headers(raw=raw)}, "no Authorization header")


# ---- through a real HTTP server: what the integrator passes from the ASGI scope --------------

@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_through_uvicorn(http):
    seen: list = []

    async def app_endpoint(request):
        scope = request.scope
        try:
            seen.append(verify_request(request.method, scope["raw_path"].decode("latin-1"),
                                       scope["query_string"].decode("latin-1"), request.headers,
                                       await request.body(), lookup))
        except AuthError as err:
            seen.append(err)
            return Response(f"<Response><Errors><Error><Code>{err.code}</Code><Message>{err.message}</Message>"
                            "</Error></Errors><RequestID>r</RequestID></Response>", status_code=403)
        if scope["path"].startswith("/snapshots"):
            return Response('{"Blocks": []}', media_type="application/json")
        if request.headers.get("x-amz-target"):
            return Response('{"Keys": []}', media_type="application/x-amz-json-1.1")
        return Response("<DescribeImagesResponse><requestId>r</requestId><imagesSet/></DescribeImagesResponse>",
                        media_type="text/xml")

    from starlette.routing import Route
    app = Starlette(routes=[Route("/{rest:path}", app_endpoint, methods=["GET", "POST", "PUT"])])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, http=http, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(100):
            if server.started:
                break
            time.sleep(0.05)
        endpoint = "http://127.0.0.1:%d" % sock.getsockname()[1]
        session = botocore.session.get_session()
        kwargs = dict(region_name="us-east-1", endpoint_url=endpoint, aws_access_key_id="AKIDEXAMPLE",
                      aws_secret_access_key=KEYS["AKIDEXAMPLE"][0])
        assert session.create_client("ec2", **kwargs).describe_images(
            Filters=[{"Name": "name", "Values": ["a b+c/é*"]}])["Images"] == []
        assert session.create_client("ebs", **kwargs).list_snapshot_blocks(
            SnapshotId="snap 1/x%y", NextToken="a b/c+d")["Blocks"] == []
        assert session.create_client("kms", **kwargs).list_keys()["Keys"] == []
        assert [c.service for c in seen] == ["ec2", "ebs", "kms"], seen
        assert all(isinstance(c, Caller) for c in seen)
        bad = session.create_client("ec2", **{**kwargs, "aws_secret_access_key": "wrong"})
        with pytest.raises(Exception, match="SignatureDoesNotMatch"):
            bad.describe_images()
    finally:
        server.should_exit = True
        thread.join(5)
