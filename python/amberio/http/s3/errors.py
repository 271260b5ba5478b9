"""S3 errors: one table from S3 error code to HTTP status, and the mapping of Amberio errors.

Handlers raise `S3Error(code, message)`; anything else that is an `AmberioError` is mapped by
`from_amberio` to the S3 code S3 would give. `S3Error` subclasses `BadRequest` only so that a
body-verification failure raised while `BlobStore.put` consumes the request body (a checksum
mismatch, a bad chunk signature) travels out of it unchanged; its status comes from `STATUS`.
"""

from __future__ import annotations

from typing import Final

from amberio.errors import (
    AmberioError,
    BadRequest,
    Conflict,
    DataCorrupted,
    Forbidden,
    IncompleteBody,
    MethodNotAllowed,
    NotFound,
    NotImplementedFeature,
    PayloadTooLarge,
    RangeNotSatisfiable,
    Unavailable,
)

# The one table: S3 error code -> HTTP status (as S3 answers them).
STATUS: Final[dict[str, int]] = {
    "AccessDenied": 403,
    "AuthorizationHeaderMalformed": 400,
    "AuthorizationQueryParametersError": 400,
    "BadDigest": 400,
    "BucketAlreadyExists": 409,
    "BucketAlreadyOwnedByYou": 409,
    "BucketNotEmpty": 409,
    "EntityTooLarge": 400,
    "EntityTooSmall": 400,
    "IncompleteBody": 400,
    "InternalError": 500,
    "InvalidAccessKeyId": 403,
    "InvalidArgument": 400,
    "InvalidBucketName": 400,
    "InvalidDigest": 400,
    "InvalidPart": 400,
    "InvalidPartNumber": 416,
    "InvalidPartOrder": 400,
    "InvalidRange": 416,
    "InvalidRequest": 400,
    "InvalidStorageClass": 400,
    "InvalidURI": 400,
    "KeyTooLongError": 400,
    "MalformedXML": 400,
    "MaxMessageLengthExceeded": 400,
    "MetadataTooLarge": 400,
    "MethodNotAllowed": 405,
    "MissingContentLength": 411,
    "NoSuchBucket": 404,
    "NoSuchKey": 404,
    "NoSuchUpload": 404,
    "NotImplemented": 501,
    "NotModified": 304,
    "OperationAborted": 409,
    "PreconditionFailed": 412,
    "RequestTimeTooSkewed": 403,
    "ServiceUnavailable": 503,
    "SignatureDoesNotMatch": 403,
    "XAmzContentSHA256Mismatch": 400,
}


class S3Error(BadRequest):
    """An S3 error answer: `code` (a key of STATUS), message, optional extra headers/fields."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        headers: list[tuple[str, str]] | None = None,
        fields: dict[str, str] | None = None,
    ) -> None:
        if code not in STATUS:
            raise ValueError(f"unknown S3 error code {code!r}")
        super().__init__(message)
        self.s3_code = code
        self.headers = headers or []
        self.fields = fields or {}

    @property
    def status(self) -> int:
        return STATUS[self.s3_code]

    def __repr__(self) -> str:
        return f"S3Error({self.s3_code!r}, {self.message!r})"


# Amberio errors raised below the S3 layer, most specific class first.
_FROM_AMBERIO: Final[list[tuple[type[AmberioError], str]]] = [
    (RangeNotSatisfiable, "InvalidRange"),
    (IncompleteBody, "IncompleteBody"),
    (PayloadTooLarge, "EntityTooLarge"),
    (NotFound, "NoSuchKey"),
    (MethodNotAllowed, "MethodNotAllowed"),
    (Conflict, "OperationAborted"),
    (NotImplementedFeature, "NotImplemented"),
    (Forbidden, "AccessDenied"),
    (DataCorrupted, "ServiceUnavailable"),
    (Unavailable, "ServiceUnavailable"),
    (BadRequest, "InvalidRequest"),
]


def from_amberio(err: AmberioError) -> S3Error:
    """The S3 answer for an error raised by storage or shared HTTP code."""
    if isinstance(err, S3Error):
        return err
    for cls, code in _FROM_AMBERIO:
        if isinstance(err, cls):
            headers: list[tuple[str, str]] = []
            if isinstance(err, RangeNotSatisfiable):
                headers.append(("content-range", f"bytes */{err.size}"))
            return S3Error(code, err.message, headers=headers)
    return S3Error("InternalError", "We encountered an internal error. Please try again.")


def not_implemented(feature: str) -> S3Error:
    return S3Error("NotImplemented", f"{feature} is not implemented by this server")
