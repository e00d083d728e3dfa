"""Errors a request can end with: an EC2 error code, a message for a person, an HTTP status."""

from vmimport.messages import shorten

# EC2's conventions (botocore only needs >= 300; these match what AWS and moto send).
_STATUS = {
    "DryRunOperation": 412,
    "AuthFailure": 401,
    "UnauthorizedOperation": 403,
    "SignatureDoesNotMatch": 403,
    "RequestLimitExceeded": 503,
    "Unavailable": 503,
    "InternalError": 500,
}


class ApiError(Exception):
    def __init__(self, code: str, message: str, status: int | None = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status or _STATUS.get(code, 400)


def missing(name: str) -> ApiError:
    return ApiError("MissingParameter", f"The request must contain the parameter {name}")


def invalid_value(name: str, value, why: str) -> ApiError:
    return ApiError("InvalidParameterValue",
                    f"Value ({shorten(value)}) for parameter {name} is invalid. {why}")


SHOWN_IDS = 10  # a message names at most this many unknown ids, then counts the rest


def not_found(code: str, ids) -> ApiError:
    """``InvalidAMIID.NotFound`` and friends; ``ids`` is one id or several. Worded as EC2
    words them: ``The image id '[ami-1]' does not exist``, ``The snapshot 'snap-1' does not
    exist.``"""
    ids = [ids] if isinstance(ids, str) else list(ids)
    shown = ", ".join(shorten(i) for i in ids[:SHOWN_IDS])
    if len(ids) > SHOWN_IDS:
        shown += f" and {len(ids) - SHOWN_IDS} more"
    plural = "s" if len(ids) > 1 else ""
    verb = "do" if plural else "does"
    if code == "InvalidAMIID.NotFound":
        return ApiError(code, f"The image id{plural} '[{shown}]' {verb} not exist")
    if code == "InvalidSnapshot.NotFound":
        return ApiError(code, f"The snapshot{plural} '{shown}' {verb} not exist.")
    noun = {"InvalidConversionTaskId": "import task id"}.get(code, "id")
    return ApiError(code, f"The {noun}{plural} '{shown}' {verb} not exist")


# S3's codes and their HTTP statuses (S3 error responses, "List of error codes").
_S3_STATUS = {
    "AccessDenied": 403, "BadDigest": 400, "BucketAlreadyExists": 409,
    "BucketAlreadyOwnedByYou": 409, "BucketNotEmpty": 409, "EntityTooSmall": 400,
    "EntityTooLarge": 400, "IncompleteBody": 400, "InvalidArgument": 400,
    "InvalidBucketName": 400, "InvalidDigest": 400, "InvalidPart": 400,
    "InvalidPartOrder": 400, "InvalidRange": 416, "InvalidRequest": 400, "KeyTooLongError": 400,
    "MalformedXML": 400, "MethodNotAllowed": 405, "NoSuchBucket": 404, "NoSuchKey": 404,
    "NoSuchUpload": 404, "NotImplemented": 501, "NotModified": 304, "PreconditionFailed": 412,
    "SignatureDoesNotMatch": 403, "XAmzContentSHA256Mismatch": 400,
}


class S3Error(ApiError):
    """An S3 error; ``resource`` (the bucket or key it is about) goes into its XML."""

    def __init__(self, code: str, message: str, resource: str | None = None,
                 status: int | None = None):
        super().__init__(code, message, status or _S3_STATUS.get(code, 400))
        self.resource = resource
