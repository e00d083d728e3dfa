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


def not_found(code: str, ids) -> ApiError:
    """``InvalidAMIID.NotFound`` and friends; ``ids`` is one id or several."""
    ids = [ids] if isinstance(ids, str) else list(ids)
    noun = {"InvalidAMIID.NotFound": "image id", "InvalidSnapshot.NotFound": "snapshot",
            "InvalidConversionTaskId": "import task id"}.get(code, "id")
    shown = ", ".join(f"'{shorten(i)}'" for i in ids)
    plural = "s" if len(ids) > 1 else ""
    return ApiError(code, f"The {noun}{plural} [{shown}] do{'' if plural else 'es'} not exist")
