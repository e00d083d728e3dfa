"""A boto3 client for the configured S3-compatible store (``VMIMPORT_S3_ENDPOINT_URL``), as
sources read it and export sinks write it."""

from __future__ import annotations

import boto3
from botocore import UNSIGNED
from botocore.config import Config

from vmimport.config import Settings


def s3_client(settings: Settings):
    """Path-style addressing (custom endpoints rarely resolve <bucket>.<host>); anonymous when
    no key is configured. An own session each time: the default one is not thread-safe."""
    anonymous = not (settings.s3_access_key or settings.s3_secret_key)
    config = Config(s3={"addressing_style": "path"}, connect_timeout=10, read_timeout=60,
                    retries={"max_attempts": 3, "mode": "standard"},
                    signature_version=UNSIGNED if anonymous else None)
    return boto3.session.Session().client(
        "s3", endpoint_url=settings.s3_endpoint_url, region_name=settings.s3_region,
        # Placeholders when anonymous: unused (UNSIGNED), and they stop botocore from hunting
        # for credentials (environment, ~/.aws, instance metadata).
        aws_access_key_id="anonymous" if anonymous else settings.s3_access_key,
        aws_secret_access_key="anonymous" if anonymous else settings.s3_secret_key,
        config=config)
