"""botocore's service models, loaded once per process and shared by every protocol."""

from __future__ import annotations

import functools

import botocore.model
import botocore.session

SERVED = ("ec2", "ebs", "iam", "kms", "s3", "sts")


@functools.cache
def service_model(name: str) -> botocore.model.ServiceModel:
    return botocore.session.get_session().get_service_model(name)


def load_models() -> None:
    """Parse the models now rather than on the first request of each kind (~50 ms each)."""
    for name in SERVED:
        service_model(name)
