"""Where the client's requests go and who signs them, resolved as the AWS CLI does (flags,
then ``AWS_*`` environment, then profiles), defaulting to a local server's embedded account."""

from __future__ import annotations

import os
from urllib.parse import urlsplit
from dataclasses import dataclass

import boto3
from botocore.config import Config

from vmimport.api.models import add_own_models

LOCAL_ENDPOINT = "http://127.0.0.1:8787"
# The embedded account's key (README: Configuration): tried only against a server on
# loopback when no credentials are configured at all.
LOCAL_KEY = ("test", "test")


class ClientError(Exception):
    """A failure to report in one line (exit status 1), without a traceback."""


@dataclass
class Endpoint:
    session: boto3.Session
    endpoint_url: str | None  # None: AWS's own endpoints
    region: str

    def __post_init__(self) -> None:
        # vmimport's own calls (their model ships in the package), before any client is
        # made: botocore caches the list of services it can find on the first.
        add_own_models(self.session._session)

    @property
    def is_vmimport(self) -> bool:
        """Whether the endpoint may be a vmimport server (AWS's own have no vmimport calls)."""
        return self.endpoint_url is not None

    def client(self, service: str, read_timeout: int = 60):
        config = Config(retries={"max_attempts": 3, "mode": "standard"},
                        read_timeout=read_timeout, signature_version=(
                            "s3v4" if service == "s3" else None),
                        s3={"addressing_style": "path"} if self.endpoint_url else None)
        return self.session.client(service, endpoint_url=self.endpoint_url,
                                   region_name=self.region, config=config)


def add_endpoint_options(parser) -> None:
    group = parser.add_argument_group("endpoint and credentials (as the AWS CLI resolves them)")
    group.add_argument("--endpoint-url", help="the service to talk to (default "
                       f"$VMIMPORT_ENDPOINT_URL, else $AWS_ENDPOINT_URL, else {LOCAL_ENDPOINT}; "
                       "'aws': AWS's own endpoints)")
    group.add_argument("--region", help="default: the profile's or $AWS_DEFAULT_REGION, "
                       "else us-east-1")
    group.add_argument("--profile", help="a profile of ~/.aws/config and ~/.aws/credentials")


def _on_this_machine(endpoint_url: str | None) -> bool:
    """A server on loopback: one whose embedded account the default key may be."""
    host = urlsplit(endpoint_url).hostname if endpoint_url else None
    return host in ("127.0.0.1", "localhost", "::1")


def resolve(args) -> Endpoint:
    endpoint = (args.endpoint_url or os.environ.get("VMIMPORT_ENDPOINT_URL")
                or os.environ.get("AWS_ENDPOINT_URL") or LOCAL_ENDPOINT)
    endpoint_url = None if endpoint == "aws" else endpoint
    try:
        session = boto3.Session(profile_name=args.profile)
    except Exception as exc:  # noqa: BLE001 - botocore's ProfileNotFound and kin
        raise ClientError(str(exc)) from None
    if session.get_credentials() is None:
        if not _on_this_machine(endpoint_url):
            raise ClientError("no credentials found: set AWS_ACCESS_KEY_ID and "
                              "AWS_SECRET_ACCESS_KEY, or name a --profile")
        session = boto3.Session(aws_access_key_id=LOCAL_KEY[0],
                                aws_secret_access_key=LOCAL_KEY[1])
    region = args.region or session.region_name or "us-east-1"
    return Endpoint(session, endpoint_url, region)


def error_text(exc) -> str:
    """A botocore ClientError as 'Code: Message', as the API worded it."""
    error = exc.response.get("Error", {})
    return f"{error.get('Code', '?')}: {error.get('Message') or exc}"
