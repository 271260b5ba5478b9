"""One error hierarchy for Amberio, mapped to HTTP statuses and codes in one table.

Handlers raise these; the HTTP layer turns them into `{"error", "code"}` bodies
(native and internal API) with the status from `HTTP_STATUS`.
"""

from __future__ import annotations


class AmberioError(Exception):
    """Base of every error a client or operator may see. `str(err)` is the message."""

    code = "InternalError"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(AmberioError):
    """Bad config file, flag or bootstrap state. The CLI prints it and exits 2."""

    code = "ConfigError"


class RegistryUnavailable(ConfigError):
    """The registry cannot be reached (at init this exits 2)."""

    code = "RegistryUnavailable"


class BadRequest(AmberioError):
    code = "BadRequest"


class InvalidPath(BadRequest):
    code = "InvalidPath"


class InvalidArgument(BadRequest):
    code = "InvalidArgument"


class IncompleteBody(BadRequest):
    """The client sent fewer bytes than Content-Length promised (or hung up)."""

    code = "IncompleteBody"


class RangeNotSatisfiable(AmberioError):
    code = "InvalidRange"

    def __init__(self, message: str, size: int) -> None:
        super().__init__(message)
        self.size = size


class NotFound(AmberioError):
    code = "NotFound"


class MethodNotAllowed(AmberioError):
    code = "MethodNotAllowed"


class Conflict(AmberioError):
    code = "Conflict"


class WriteIdConflict(Conflict):
    """The write id was already used for a different body."""

    code = "WriteIdConflict"


class PayloadTooLarge(AmberioError):
    code = "PayloadTooLarge"


class Unavailable(AmberioError):
    """A needed replica, part or archive is not available right now."""

    code = "Unavailable"


class DataCorrupted(Unavailable):
    """Stored bytes failed verification and no good copy could be found."""

    code = "DataCorrupted"


class QuorumNotReached(Unavailable):
    code = "QuorumNotReached"


class NotImplementedFeature(AmberioError):
    code = "NotImplemented"


class Forbidden(AmberioError):
    code = "Forbidden"


# The one table from error class to HTTP status; the most specific class wins.
HTTP_STATUS: dict[type[AmberioError], int] = {
    AmberioError: 500,
    ConfigError: 500,
    RegistryUnavailable: 503,
    BadRequest: 400,
    InvalidPath: 400,
    InvalidArgument: 400,
    IncompleteBody: 400,
    RangeNotSatisfiable: 416,
    NotFound: 404,
    MethodNotAllowed: 405,
    Conflict: 409,
    WriteIdConflict: 409,
    PayloadTooLarge: 413,
    Unavailable: 503,
    DataCorrupted: 503,
    QuorumNotReached: 503,
    NotImplementedFeature: 501,
    Forbidden: 403,
}


def http_status(err: AmberioError) -> int:
    for cls in type(err).__mro__:
        status = HTTP_STATUS.get(cls)
        if status is not None:
            return status
    return 500
