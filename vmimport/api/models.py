"""botocore's service models, loaded once per process and shared by every protocol; and
vmimport's own (``service_models/``, in botocore's layout, so that boto3 reads it too)."""

from __future__ import annotations

import functools
from pathlib import Path

import botocore.model
import botocore.session

SERVED = ("ec2", "ebs", "iam", "kms", "s3", "sts", "vmimport")
# vmimport/<version>/service-2.json: the calls beyond AWS's shapes (task detail).
OWN_MODELS = Path(__file__).parent / "service_models"


def add_own_models(session: botocore.session.Session) -> botocore.session.Session:
    """Let ``session`` (botocore's, or a boto3 Session's ``_session``) load vmimport's model."""
    loader = session.get_component("data_loader")
    if str(OWN_MODELS) not in loader.search_paths:
        loader.search_paths.append(str(OWN_MODELS))
    return session


@functools.cache
def service_model(name: str) -> botocore.model.ServiceModel:
    description = add_own_models(botocore.session.get_session()).get_service_data(name)
    _drop_documentation(description)
    return botocore.model.ServiceModel(description, service_name=name)


def _drop_documentation(node) -> None:
    """The models' HTML documentation strings are half their size and the server never reads
    them: dropped, they leave ~7 MiB of the API process's memory free (7 models)."""
    if isinstance(node, dict):
        node.pop("documentation", None)
        node.pop("documentationUrl", None)
        for value in node.values():
            _drop_documentation(value)
    elif isinstance(node, list):
        for value in node:
            _drop_documentation(value)


def load_models() -> None:
    """Parse the models now rather than on the first request of each kind (~50 ms each)."""
    for name in SERVED:
        service_model(name)
