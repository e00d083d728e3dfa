"""One object per served protocol, chosen by the service model's ``metadata["protocol"]``: how an
operation is found in a request, how its input is parsed, how a result and an error are
written, and which codes this protocol uses for the failures every request can meet.

The front door (``app.py``) does everything else once for all of them; adding a service is its
model, its actions table (``actions.py``) and, for a protocol not served yet, a class here.
"""

from __future__ import annotations

from vmimport.service.errors import ApiError

from . import actions, ec2_protocol, json_protocol, query_protocol, rest_json
from .models import service_model
from .protocol_base import (AUTH, DENIED, EXPIRED, INTERNAL, INVALID, SIGNATURE, THROTTLED,
                            TOKEN, UNAVAILABLE, ApiRequest, Protocol, Refusal, Reply)
from .s3_protocol import S3Protocol
from .sigv4 import QueryEncodingError, decode_query

XML = "text/xml;charset=UTF-8"
# Parameters of one Query request (form body plus query string), counted before any is decoded:
# EC2's largest legitimate requests (200 filter values, 1,000 ids, their names) stay well under.
MAX_PARAMETERS = 3_000


def _form_pairs(request: ApiRequest) -> list[tuple[str, str]]:
    """Query-protocol parameters: the form body (POST) plus the query string, without the
    presigned-URL auth parameters, decoded as the signature was."""
    if request.form is None:
        count = len(request.query) + (request.body.count(b"&") + 1 if request.body else 0)
        if count > MAX_PARAMETERS:
            raise Refusal(INVALID, f"The request has {count} parameters; at most "
                          f"{MAX_PARAMETERS} are accepted")
        pairs = []
        if request.method == "POST" and request.body:
            try:
                pairs = decode_query(request.body.decode("ascii"))
            except (UnicodeDecodeError, QueryEncodingError):
                raise Refusal(INVALID, "The request body is not form-encoded UTF-8 "
                              "(application/x-www-form-urlencoded)") from None
        pairs += [(k, v) for k, v in request.query if not k.startswith("X-Amz-")]
        request.form = pairs
    return request.form


def _action_of(request: ApiRequest) -> str:
    for key, value in _form_pairs(request):
        if key == "Action":
            return value
    raise ApiError("MissingAction", "The request must contain the parameter Action")


def _without_action(request: ApiRequest) -> list[tuple[str, str]]:
    return [(k, v) for k, v in _form_pairs(request) if k not in ("Action", "Version")]


class Ec2Protocol(Protocol):
    codes = {AUTH: ("AuthFailure", 401), SIGNATURE: ("SignatureDoesNotMatch", 403),
             TOKEN: ("AuthFailure", 401), EXPIRED: ("AuthFailure", 401),
             DENIED: ("UnauthorizedOperation", 403),
             THROTTLED: ("RequestLimitExceeded", 503), INVALID: ("InvalidParameterValue", 400),
             UNAVAILABLE: ("Unavailable", 503), INTERNAL: ("InternalError", 500)}

    def operation(self, request):
        action = _action_of(request)
        if action not in self.model.operation_names:
            raise ApiError("InvalidAction", f"The action {ec2_protocol._show(action)} is not "
                           "valid for this web service.")
        return self.model.operation_model(action)

    def not_served(self, name):
        return ApiError("UnsupportedOperation", f"{name} is an EC2 action that vmimport does "
                        "not serve (yet); see the README's API coverage table")

    def parse(self, operation, request):
        return ec2_protocol.parse_query(operation, _without_action(request))

    def denied(self, action, who, why=None):
        return ApiError("UnauthorizedOperation", "You are not authorized to perform this "
                        f"operation ({action} is not allowed for {who}"
                        + (f": {why}" if why else "") + ").")

    def dry_run(self, params):
        return bool(params.get("DryRun"))

    def reply(self, operation, result, request_id):
        return Reply(200, ec2_protocol.serialize_response(operation, result, request_id),
                     {"Content-Type": XML})

    def error(self, code, message, status, request_id):
        return Reply(status, ec2_protocol.serialize_error(code, message, request_id),
                     {"Content-Type": XML})


class QueryProtocol(Protocol):
    """The AWS Query protocol (IAM, STS)."""

    codes = {AUTH: ("InvalidClientTokenId", 403), SIGNATURE: ("SignatureDoesNotMatch", 403),
             TOKEN: ("InvalidClientTokenId", 403), EXPIRED: ("ExpiredToken", 403),
             DENIED: ("AccessDenied", 403),
             THROTTLED: ("Throttling", 400), INVALID: ("ValidationError", 400),
             UNAVAILABLE: ("ServiceUnavailable", 503), INTERNAL: ("ServiceFailure", 500)}
    # IAM's conventions for HTTP status by error code (botocore only needs >= 300).
    _STATUS = {"NoSuchEntity": 404, "EntityAlreadyExists": 409, "DeleteConflict": 409,
               "LimitExceeded": 409}

    def operation(self, request):
        action = _action_of(request)
        if action not in self.model.operation_names:
            raise ApiError("InvalidAction", f"Could not find operation "
                           f"{ec2_protocol._show(action)} for version "
                           f"{self.model.api_version}")
        return self.model.operation_model(action)

    def not_served(self, name):
        return ApiError("InvalidAction", f"{name} is an {self.service.upper()} action that "
                        "vmimport does not serve; see the README's API coverage table")

    def parse(self, operation, request):
        return query_protocol.parse_query(operation, _without_action(request))

    def denied(self, action, who, why=None):
        return ApiError("AccessDenied", f"User: {who} is not authorized to perform: "
                        f"{self.service}:{action}" + (f" ({why})" if why else ""), 403)

    def status_of(self, error):
        return self._STATUS.get(error.code, error.status)

    def reply(self, operation, result, request_id):
        return Reply(200, query_protocol.serialize_response(operation, result, request_id),
                     {"Content-Type": XML})

    def error(self, code, message, status, request_id):
        return Reply(status, query_protocol.serialize_error(
            self.model.metadata["xmlNamespace"], code, message, request_id, sender=status < 500),
            {"Content-Type": XML})


class JsonProtocol(Protocol):
    """The AWS JSON protocol (KMS): the operation in X-Amz-Target, input and output as JSON."""

    codes = {AUTH: ("UnrecognizedClientException", 400),
             SIGNATURE: ("InvalidSignatureException", 400),
             TOKEN: ("UnrecognizedClientException", 400),
             EXPIRED: ("ExpiredTokenException", 400),
             DENIED: ("AccessDeniedException", 400), THROTTLED: ("ThrottlingException", 400),
             INVALID: ("ValidationException", 400),
             UNAVAILABLE: ("KMSInternalException", 503), INTERNAL: ("KMSInternalException", 500)}

    def operation(self, request):
        return json_protocol.operation_for(self.service, request.headers.get("x-amz-target"))

    def not_served(self, name):
        return ApiError("UnsupportedOperationException", f"{name} is a {self.service.upper()} "
                        "operation that vmimport does not serve; see the README's API coverage "
                        "table")

    def parse(self, operation, request):
        return json_protocol.parse_request(operation, request.body)

    def status_of(self, error):
        return 400 if error.status == 401 else error.status

    def reply(self, operation, result, request_id):
        return Reply(200, json_protocol.serialize_response(operation, result),
                     {"Content-Type": json_protocol.CONTENT_TYPE})

    def error(self, code, message, status, request_id):
        return Reply(status, json_protocol.serialize_error(code, message),
                     {"Content-Type": json_protocol.CONTENT_TYPE, "x-amzn-ErrorType": code})


class VmimportProtocol(JsonProtocol):
    """vmimport's own calls: the JSON protocol with service-neutral codes (not KMS's)."""

    codes = {**JsonProtocol.codes, UNAVAILABLE: ("ServiceUnavailableException", 503),
             INTERNAL: ("InternalServerException", 500)}

    def not_served(self, name):
        return ApiError("UnknownOperationException", f"{name} is not a vmimport operation")


class RestJsonProtocol(Protocol):
    """The rest-json protocol (EBS direct APIs): operations by method and path."""

    codes = {AUTH: ("AccessDeniedException", 403), SIGNATURE: ("SignatureDoesNotMatch", 403),
             TOKEN: ("AccessDeniedException", 403), EXPIRED: ("ExpiredTokenException", 403),
             DENIED: ("AccessDeniedException", 403),
             THROTTLED: ("RequestThrottledException", 400),
             INVALID: ("ValidationException", 400),
             UNAVAILABLE: ("ServiceUnavailableException", 503),
             INTERNAL: ("InternalServerException", 500)}

    def operation(self, request):
        operation, request.labels = rest_json.match(self.service, request.method, request.path)
        return operation

    def not_served(self, name):
        return ApiError("ValidationException", f"{name} is not served by vmimport (snapshots "
                        "are created by imports; only the read APIs are served)")

    def parse(self, operation, request):
        query = [(k, v) for k, v in request.query if not k.startswith("X-Amz-")]
        return rest_json.parse_input(operation, request.labels, query, request.headers)

    def reply(self, operation, result, request_id):
        status, headers, payload = rest_json.serialize_output(operation, result)
        return Reply(status, payload, headers)

    def error(self, code, message, status, request_id):
        status, headers, payload = rest_json.serialize_error(ApiError(code, message, status),
                                                             request_id)
        return Reply(status, payload, headers)


_BY_MODEL_PROTOCOL = {"ec2": Ec2Protocol, "query": QueryProtocol, "json": JsonProtocol,
                      "rest-json": RestJsonProtocol}


def served_protocols(virtual_host_suffixes=("localhost",)) -> dict[str, Protocol]:
    """Every served service's protocol object, by the service name clients sign for."""
    tables = {"ec2": actions.EC2_ACTIONS, "iam": actions.IAM_ACTIONS, "kms": actions.KMS_ACTIONS,
              "ebs": actions.EBS_ACTIONS, "sts": actions.STS_ACTIONS}
    served = {service: _BY_MODEL_PROTOCOL[service_model(service).metadata["protocol"]](service, table)
              for service, table in tables.items()}
    served["s3"] = S3Protocol("s3", actions.S3_ACTIONS, virtual_host_suffixes)
    served["vmimport"] = VmimportProtocol("vmimport", actions.VMIMPORT_ACTIONS)
    return served
