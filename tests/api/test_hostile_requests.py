"""Hostile requests against a live server: each case is one of the holes an attack on the API
found (issue "Hardening"), sent on the wire as an attacker would, answered with the code an SDK
expects and without effect. Beside tests/hostile (crafted images)."""

from __future__ import annotations

import http.client
import re
from urllib.parse import quote, urlsplit

import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from vmimport.api.protocols import MAX_PARAMETERS

EC2_FORM = "application/x-www-form-urlencoded; charset=utf-8"


def signed(server, body: bytes | str = b"", *, service="ec2", region="us-east-1", path="/",
           method="POST", headers=None, token=None, key=("test", "test")) -> AWSRequest:
    body = body.encode() if isinstance(body, str) else body
    request = AWSRequest(method=method, url=server.endpoint + path, data=body,
                         headers={"Content-Type": EC2_FORM, **(headers or {})})
    SigV4Auth(Credentials(*key, token), service, region).add_auth(request)
    return request


def send(server, request: AWSRequest | None = None, *, method="POST", path="/", body=b"",
         headers=None) -> tuple[int, bytes]:
    """Send as-is on a fresh connection: the raw bytes an attacker controls."""
    if request is not None:
        prepared = request.prepare()
        url = urlsplit(prepared.url)
        method, path = prepared.method, url.path + (f"?{url.query}" if url.query else "")
        body = prepared.body or b""
        headers = {**dict(prepared.headers.items()), **(headers or {})}
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        has_host = any(k.lower() == "host" for k in headers or {})
        conn.putrequest(method, path, skip_host=has_host, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        if body and not any(k.lower() == "content-length" for k in headers or {}):
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body or None)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def code_of(payload: bytes) -> str:
    found = re.search(rb"<Code>([^<]*)</Code>|\"__type\": \"([^\"]*)\"", payload)
    assert found, payload[:300]
    return (found.group(1) or found.group(2)).decode()


def image_ids(ec2) -> set[str]:
    return {i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]}


# 1. An unsigned body swapped into a captured request -------------------------------------

def test_unsigned_payload_cannot_carry_another_action(server):
    iam = server.client("iam")
    iam.create_role(RoleName="hostile-unsigned", AssumeRolePolicyDocument='{"Statement": []}')
    captured = signed(server, "Action=GetRole&Version=2010-05-08&RoleName=hostile-unsigned",
                      service="iam", headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})
    swapped = ("Action=PutRolePolicy&Version=2010-05-08&RoleName=hostile-unsigned&PolicyName=p"
               "&PolicyDocument=" + quote('{"Statement": [{"Effect": "Allow", "Action": "*"}]}'))
    captured.data = swapped.encode()
    status, payload = send(server, captured)
    assert status == 403 and code_of(payload) == "SignatureDoesNotMatch", payload
    assert b"accepted by S3 only" in payload
    assert iam.list_role_policies(RoleName="hostile-unsigned")["PolicyNames"] == []


def test_unsigned_payload_refused_on_ec2_and_kms(server):
    ec2 = signed(server, "Action=DescribeImages&Version=2016-11-15",
                 headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})
    status, payload = send(server, ec2)
    assert status == 403 and code_of(payload) == "SignatureDoesNotMatch"
    kms = signed(server, b"{}", service="kms", headers={
        "X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD", "X-Amz-Target": "TrentService.ListKeys",
        "Content-Type": "application/x-amz-json-1.1"})
    status, payload = send(server, kms)
    assert status == 400 and code_of(payload) == "InvalidSignatureException"


# 2. Stall and memory by headers --------------------------------------------------------

def test_thousands_of_signed_headers_are_refused_unread(server, ec2):
    headers = {f"x-amz-meta-h{i}": "v" for i in range(3000)}
    status, payload = send(server, signed(server, "Action=DescribeImages&Version=2016-11-15",
                                          headers=headers))
    assert status == 431 and code_of(payload) == "InvalidParameterValue"
    assert b"at most 128 are accepted" in payload
    assert "Images" in ec2.describe_images(Owners=["self"])  # the server is still there


def test_a_huge_header_is_refused(server):
    status, payload = send(server, signed(server, "Action=DescribeImages&Version=2016-11-15",
                                          headers={"X-Amz-Meta-Big": "x" * (1 << 20)}))
    assert status == 431 and b"bytes; at most" in payload


def test_oversized_body_query_and_parameter_count(server):
    status, payload = send(server, signed(server, b"Action=DescribeImages&" + b"x" * (2 << 20)))
    assert status == 413 and code_of(payload) == "InvalidParameterValue"
    status, _ = send(server, signed(server, method="GET",
                                    path="/?Action=DescribeImages&Owner.1=" + "a" * (56 << 10)))
    assert status == 414
    many = "&".join(f"ImageId.{i}=ami-{i:017x}" for i in range(1, MAX_PARAMETERS + 2))
    status, payload = send(server, signed(server, "Action=DescribeImages&" + many))
    assert status == 400 and b"parameters; at most" in payload


def test_list_longer_than_ec2_allows(server):
    ids = "&".join(f"ImageId.{i}=ami-{i:017x}" for i in range(1, 1002))
    status, payload = send(server, signed(server, "Action=DescribeImages&Version=2016-11-15&" + ids))
    assert status == 400 and code_of(payload) == "InvalidParameterValue"
    assert b"ImageId takes 0 to 1000 items, got 1001" in payload


# 4. Credential scope and security tokens -------------------------------------------------

@pytest.mark.parametrize("region", ["us-west-2", "xx"])
def test_scope_region_must_be_the_servers(server, region):
    status, payload = send(server, signed(server, "Action=DescribeImages&Version=2016-11-15",
                                          region=region))
    assert status == 401 and code_of(payload) == "AuthFailure"
    assert b"Credential should be scoped to a valid region" in payload


def test_iam_signed_for_us_east_1_is_its_global_region(server):
    assert "Roles" in server.client("iam", region="us-east-1").list_roles()


@pytest.mark.parametrize("service,code", [("s3", "AccessDenied"),
                                          ("sts", "MissingAction"), ("iam", "MissingAction")])
def test_ebs_paths_need_an_ebs_scope(server, service, code):
    # Served as the service it was signed for (IAM has no such action; S3 wants
    # x-amz-content-sha256), never as EBS.
    request = signed(server, method="GET", path="/snapshots/snap-0123456789abcdef0/blocks",
                     service=service)
    status, payload = send(server, request)
    assert status >= 400 and code_of(payload) == code


@pytest.mark.parametrize("service,code,status", [
    ("ec2", "AuthFailure", 401), ("iam", "InvalidClientTokenId", 403),
    ("kms", "UnrecognizedClientException", 400)])
def test_made_up_security_token_is_refused(server, service, code, status):
    body, headers = {"ec2": ("Action=DescribeImages&Version=2016-11-15", {}),
                     "iam": ("Action=ListRoles&Version=2010-05-08", {}),
                     "kms": ("{}", {"X-Amz-Target": "TrentService.ListKeys",
                                    "Content-Type": "application/x-amz-json-1.1"})}[service]
    got, payload = send(server, signed(server, body, service=service, headers=headers,
                                       token="FwoGZXIvYXdzEJr//////////madeup"))
    assert (got, code_of(payload)) == (status, code)
    assert b"security token included in the request is invalid" in payload


def test_made_up_token_in_a_presigned_url(server):
    request = AWSRequest(method="GET", url=server.endpoint + "/?Action=DescribeImages&Version=2016-11-15")
    SigV4QueryAuth(Credentials("test", "test", "madeup"), "ec2", "us-east-1").add_auth(request)
    status, payload = send(server, request)
    assert status == 401 and b"security token" in payload


# 5. Presigned URLs: a '+' in place of a signed %2B ---------------------------------------

def test_presigned_plus_is_not_percent_2b(server, ec2):
    ec2.create_tags(Resources=[_some_resource(server, ec2)], Tags=[{"Key": "hostile", "Value": "a+b"}])
    request = AWSRequest(method="GET", url=server.endpoint + "/?Action=DescribeTags&Version=2016-11-15"
                         "&Filter.1.Name=value&Filter.1.Value.1=a%2Bb")
    SigV4QueryAuth(Credentials("test", "test"), "ec2", "us-east-1").add_auth(request)
    status, payload = send(server, request)
    assert status == 200 and b"<value>a+b</value>" in payload
    url = request.prepare().url.replace("a%2Bb", "a+b")
    status, payload = send(server, method="GET", path=url[len(server.endpoint):],
                           headers={"Host": f"127.0.0.1:{server.port}"})
    assert status == 403 and code_of(payload) == "SignatureDoesNotMatch"


def _some_resource(server, ec2) -> str:
    """A resource of the default account to tag: an import task (no image needed)."""
    bucket = server.buckets / "hostile-requests"
    bucket.mkdir(parents=True, exist_ok=True)
    (bucket / "tiny.raw").write_bytes(b"\0" * 512)
    return ec2.import_snapshot(DiskContainer={
        "Format": "raw", "UserBucket": {"S3Bucket": "hostile-requests", "S3Key": "tiny.raw"}})["ImportTaskId"]


# 8. Values no database or XML can carry --------------------------------------------------

@pytest.mark.parametrize("raw,what", [("a%00b", "U+0000"), ("a%01b", "U+0001"),
                                      ("%ED%A0%80", "not form-encoded UTF-8"),
                                      ("%FF", "not form-encoded UTF-8")])
def test_unrepresentable_values_are_refused_naming_the_parameter(server, raw, what):
    body = ("Action=ImportImage&Version=2016-11-15&Description=" + raw +
            "&DiskContainer.1.Format=raw&DiskContainer.1.UserBucket.S3Bucket=b"
            "&DiskContainer.1.UserBucket.S3Key=k")
    status, payload = send(server, signed(server, body))
    assert status == 400 and code_of(payload) == "InvalidParameterValue", payload
    assert what.encode() in payload
    if "U+" in what:
        assert b"for Description" in payload


def test_tabs_and_newlines_are_kept(server, ec2):
    task = ec2.import_snapshot(Description="line 1\n\tline 2", DiskContainer={
        "Format": "raw", "UserBucket": {"S3Bucket": "nowhere", "S3Key": "k"}})
    assert task["Description"] == "line 1\n\tline 2"


def test_kms_json_strings_are_checked_too(server):
    request = signed(server, '{"Description": "a\\u0000b"}', service="kms", headers={
        "X-Amz-Target": "TrentService.CreateKey", "Content-Type": "application/x-amz-json-1.1"})
    status, payload = send(server, request)
    assert status == 400 and code_of(payload) == "ValidationException"
    assert b"U+0000" in payload and b"Description" in payload
