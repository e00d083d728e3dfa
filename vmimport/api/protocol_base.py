"""What every protocol object shares: the request as the front door hands it on, the reply, the
failures every request can meet (named once, worded per protocol) and the ``Protocol`` base
class (``protocols.py`` and ``s3_protocol.py`` hold the protocols themselves)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, Iterator

import botocore.model
from starlette.datastructures import Headers

from vmimport.service.errors import ApiError

from .models import service_model


@dataclass
class ApiRequest:
    """What the front door knows of a request once its body is read."""

    method: str
    path: str                      # as sent, percent-encoding kept (ASGI ``raw_path``)
    query: list[tuple[str, str]]   # decoded pairs, auth parameters included
    headers: Headers
    body: bytes
    request_id: str
    form: list[tuple[str, str]] | None = field(default=None, repr=False)  # Query protocols
    stream: object = field(default=None, repr=False)  # S3: the RequestBody, read by handlers
    labels: dict[str, str] = field(default_factory=dict)  # REST protocols: URI labels


@dataclass
class Reply:
    status: int
    body: bytes | Iterator[bytes]  # an iterator is streamed (S3 GetObject)
    headers: dict[str, str]


# The failures every request can meet, named once; each protocol says how it spells them.
AUTH, SIGNATURE, TOKEN, DENIED, THROTTLED, INVALID, UNAVAILABLE, INTERNAL = (
    "auth", "signature", "token", "denied", "throttled", "invalid", "unavailable", "internal")
EXPIRED = "expired"  # temporary credentials past their expiry


class Refusal(Exception):
    """A failure of the front door's own, worded per protocol through ``Protocol.codes``."""

    def __init__(self, kind: str, message: str, status: int | None = None):
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message
        self.status = status


class Protocol(ABC):
    """A served protocol; each subclass says how it finds, parses and answers an operation."""

    service: str
    codes: dict[str, tuple[str, int]]
    streams_body = False  # True: the handler reads the body (ApiRequest.stream), not the door

    def __init__(self, service: str, actions_table: dict[str, Callable]):
        self.service = service
        self.model = service_model(service)
        self.actions = actions_table  # read at each call: tests replace handlers in it

    @abstractmethod
    def operation(self, request: ApiRequest) -> botocore.model.OperationModel:
        """The operation a request names (Action, X-Amz-Target, method and path...)."""

    def handler(self, operation: botocore.model.OperationModel) -> Callable:
        handler = self.actions.get(operation.name)
        if handler is None:
            raise self.not_served(operation.name)
        return handler

    def not_served(self, name: str) -> ApiError:
        """The answer to an operation of the model that vmimport does not serve."""
        return ApiError("NotImplemented", f"{name} is not served by vmimport")

    @abstractmethod
    def parse(self, operation: botocore.model.OperationModel, request: ApiRequest) -> dict:
        """The operation's input, boto3-shaped."""

    @abstractmethod
    def reply(self, operation, result: dict, request_id: str) -> Reply:
        """A handler's result in this protocol's wire form."""

    @abstractmethod
    def error(self, code: str, message: str, status: int, request_id: str) -> Reply:
        """An error in this protocol's envelope."""

    def denied(self, action: str, who: str, why: str | None = None) -> ApiError:
        """``who``: the caller as messages name it (an access key, or a role session's ARN);
        ``why``: which policy decided, for role sessions."""
        code, status = self.codes[DENIED]
        return ApiError(code, f"{who} is not authorized to perform: {self.service}:{action}"
                        + (f" ({why})" if why else ""), status)

    def dry_run(self, params: dict) -> bool:
        """Whether the request asks for every check and no effect (EC2's DryRun)."""
        return False

    def status_of(self, error: ApiError) -> int:
        return error.status

    def refusal(self, refusal: Refusal, request_id: str) -> Reply:
        code, status = self.codes[refusal.kind]
        return self.error(code, refusal.message, refusal.status or status, request_id)

    def api_error(self, error: ApiError, request_id: str) -> Reply:
        return self.error(error.code, error.message, self.status_of(error), request_id)
