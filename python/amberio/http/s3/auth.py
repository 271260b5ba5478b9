"""AWS Signature Version 4 for the S3 gateway: header auth, presigned URLs, streaming chunks.

Verified only when `s3.credentials` are configured; without them every request is accepted
(the server warns at start). The canonical URI is rebuilt from the decoded path with S3's
encoding (every byte but `A-Za-z0-9-._~` and `/` percent-encoded, no double encoding), which is
what every AWS SDK signs; the HTTP server gives us no raw path.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from amberio.http.messages import Request
from amberio.http.s3.errors import S3Error

ALGORITHM: Final = "AWS4-HMAC-SHA256"
MAX_SKEW_SECONDS: Final = 5 * 60
MAX_PRESIGNED_EXPIRES: Final = 7 * 24 * 3600
UNSIGNED_PAYLOAD: Final = "UNSIGNED-PAYLOAD"
STREAMING_SIGNED: Final = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER: Final = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER: Final = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
STREAMING_ECDSA: Final = (
    "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD",
    "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD-TRAILER",
)
_AMZ_DATE: Final = "%Y%m%dT%H%M%SZ"
_SPACES: Final = re.compile(r"\s+")
_HEX64: Final = re.compile(r"^[0-9a-f]{64}$")


def uri_encode(text: str, *, keep_slash: bool) -> str:
    return urllib.parse.quote(text, safe="/~" if keep_slash else "~")


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = _hmac(("AWS4" + secret).encode("utf-8"), date)
    key = _hmac(key, region)
    key = _hmac(key, service)
    return _hmac(key, "aws4_request")


@dataclass(frozen=True, slots=True)
class Signed:
    """A verified request: who signed it and what a streaming body's chunks must chain to."""

    access_key_id: str
    key: bytes
    amz_date: str
    scope: str
    signature: str
    presigned: bool

    @property
    def seed(self) -> str:
        return self.signature

    def chunk(self, previous: str, data_sha256: str) -> str:
        to_sign = "\n".join(
            (
                "AWS4-HMAC-SHA256-PAYLOAD",
                self.amz_date,
                self.scope,
                previous,
                hashlib.sha256(b"").hexdigest(),
                data_sha256,
            )
        )
        return hmac.new(self.key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()

    def trailer(self, previous: str, trailer_sha256: str) -> str:
        to_sign = "\n".join(
            ("AWS4-HMAC-SHA256-TRAILER", self.amz_date, self.scope, previous, trailer_sha256)
        )
        return hmac.new(self.key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


class Verifier:
    """Checks SigV4 against the configured access keys."""

    def __init__(self, credentials: Mapping[str, str]) -> None:
        self._secrets = dict(credentials)
        self._keys: dict[tuple[str, str, str, str], bytes] = {}

    @property
    def enabled(self) -> bool:
        return bool(self._secrets)

    def _key(self, access_key_id: str, date: str, region: str, service: str) -> bytes:
        cache_key = (access_key_id, date, region, service)
        key = self._keys.get(cache_key)
        if key is None:
            if len(self._keys) > 1024:
                self._keys.clear()
            key = signing_key(self._secrets[access_key_id], date, region, service)
            self._keys[cache_key] = key
        return key

    def verify(self, req: Request, now: datetime.datetime | None = None) -> Signed:
        now = now or datetime.datetime.now(datetime.UTC)
        authorization = req.header("authorization")
        pairs = query_pairs(req.query_string)
        presigned = any(name == "X-Amz-Algorithm" for name, _ in pairs)
        if authorization is not None and presigned:
            raise S3Error(
                "InvalidArgument", "only one auth mechanism allowed: header or query parameters"
            )
        v2_query = any(name == "AWSAccessKeyId" for name, _ in pairs)
        if authorization is not None and v2_query:
            raise S3Error(
                "InvalidArgument", "only one auth mechanism allowed: header or query parameters"
            )
        if authorization is not None:
            if authorization.startswith("AWS "):
                return self._verify_v2(req, pairs, now, authorization=authorization)
            return self._verify_header(req, authorization, pairs, now)
        if presigned:
            return self._verify_query(req, pairs, now)
        if v2_query:
            return self._verify_v2(req, pairs, now, authorization=None)
        raise S3Error("AccessDenied", "Access Denied: the request is not signed")

    # ---- Signature Version 2 (what boto3 presigns by default) --------------------------

    def _verify_v2(
        self,
        req: Request,
        pairs: list[tuple[str, str]],
        now: datetime.datetime,
        *,
        authorization: str | None,
    ) -> Signed:
        params = dict(pairs)
        if authorization is not None:
            access_key_id, sep, signature = authorization[4:].strip().rpartition(":")
            if not sep or not access_key_id:
                raise S3Error(
                    "AuthorizationHeaderMalformed", "expected 'AWS <access key>:<signature>'"
                )
            amz_date = req.header("x-amz-date")
            date_text = amz_date or req.header("date")
            if date_text is None:
                raise S3Error(
                    "AccessDenied", "AWS authentication requires a valid Date or x-amz-date header"
                )
            stamp = _parse_http_date(date_text)
            if abs((now - stamp).total_seconds()) > MAX_SKEW_SECONDS:
                raise S3Error(
                    "RequestTimeTooSkewed",
                    "the difference between the request time and the server's time is too large",
                )
            date_line = "" if amz_date is not None else date_text
        else:
            access_key_id = params.get("AWSAccessKeyId", "")
            signature = params.get("Signature", "")
            expires = params.get("Expires", "")
            if not signature or not (expires.isascii() and expires.isdigit()):
                raise S3Error(
                    "AuthorizationQueryParametersError",
                    "query-string authentication needs AWSAccessKeyId, Signature and Expires",
                )
            if now.timestamp() > int(expires):
                raise S3Error("AccessDenied", "Request has expired")
            date_line = expires
        secret = self._secrets.get(access_key_id)
        if secret is None:
            raise S3Error(
                "InvalidAccessKeyId",
                "the access key id you provided does not exist in our records",
            )
        content_types = [req.header("content-type") or ""]
        if authorization is None and content_types[0]:
            # A presigned URL rarely fixes a Content-Type, but HTTP libraries add one.
            content_types.append("")
        for content_type in content_types:
            to_sign = string_to_sign_v2(req, pairs, date_line, content_type)
            expected = base64.b64encode(
                hmac.new(secret.encode("utf-8"), to_sign.encode("utf-8"), hashlib.sha1).digest()
            ).decode("ascii")
            if hmac.compare_digest(expected, signature.strip()):
                return Signed(access_key_id, b"", "", "", expected, authorization is None)
        raise S3Error(
            "SignatureDoesNotMatch",
            "the request signature we calculated does not match the signature you provided; "
            "check your key and signing method",
            fields={"StringToSign": string_to_sign_v2(req, pairs, date_line, content_types[0])},
        )

    # ---- Signature Version 4: Authorization header ------------------------------------

    def _verify_header(
        self,
        req: Request,
        authorization: str,
        pairs: list[tuple[str, str]],
        now: datetime.datetime,
    ) -> Signed:
        algorithm, _, rest = authorization.strip().partition(" ")
        if algorithm != ALGORITHM:
            if algorithm == "AWS":
                raise S3Error(
                    "InvalidRequest",
                    "this server supports only AWS4-HMAC-SHA256 (Signature Version 4)",
                )
            raise S3Error(
                "AuthorizationHeaderMalformed", f"unsupported authorization type {algorithm!r}"
            )
        fields: dict[str, str] = {}
        for item in rest.split(","):
            name, sep, value = item.strip().partition("=")
            if sep:
                fields[name.strip()] = value.strip()
        try:
            credential = fields["Credential"]
            signed_headers = fields["SignedHeaders"]
            signature = fields["Signature"]
        except KeyError as exc:
            raise S3Error(
                "AuthorizationHeaderMalformed",
                f"the authorization header is missing {exc.args[0]}",
            ) from None
        amz_date = req.header("x-amz-date")
        if amz_date is None:
            date_header = req.header("date")
            if date_header is None:
                raise S3Error(
                    "AccessDenied",
                    "AWS authentication requires a valid Date or x-amz-date header",
                )
            stamp = _parse_http_date(date_header)
            amz_date = stamp.strftime(_AMZ_DATE)
        else:
            stamp = _parse_amz_date(amz_date, "AccessDenied")
        access_key_id, scope, key = self._scope(
            credential, amz_date, "AuthorizationHeaderMalformed"
        )
        if abs((now - stamp).total_seconds()) > MAX_SKEW_SECONDS:
            raise S3Error(
                "RequestTimeTooSkewed",
                "the difference between the request time and the server's time is too large",
            )
        payload_hash = req.header("x-amz-content-sha256")
        if payload_hash is None:
            raise S3Error(
                "InvalidRequest", "missing required header for this request: x-amz-content-sha256"
            )
        canonical = canonical_request(
            req, pairs, signed_headers.split(";"), payload_hash, presigned=False
        )
        return self._check(access_key_id, key, amz_date, scope, canonical, signature, False)

    # ---- presigned URL ---------------------------------------------------------------

    def _verify_query(
        self, req: Request, pairs: list[tuple[str, str]], now: datetime.datetime
    ) -> Signed:
        params = dict(pairs)
        bad = "AuthorizationQueryParametersError"
        if params.get("X-Amz-Algorithm") != ALGORITHM:
            raise S3Error(bad, "X-Amz-Algorithm only supports AWS4-HMAC-SHA256")
        missing = [
            name
            for name in (
                "X-Amz-Credential",
                "X-Amz-Date",
                "X-Amz-Expires",
                "X-Amz-SignedHeaders",
                "X-Amz-Signature",
            )
            if name not in params
        ]
        if missing:
            raise S3Error(bad, f"query-string authentication requires {', '.join(missing)}")
        amz_date = params["X-Amz-Date"]
        stamp = _parse_amz_date(amz_date, bad)
        expires_text = params["X-Amz-Expires"]
        if not (expires_text.isascii() and expires_text.isdigit()):
            raise S3Error(bad, "X-Amz-Expires must be a non-negative integer")
        expires = int(expires_text)
        if expires > MAX_PRESIGNED_EXPIRES:
            raise S3Error(bad, "X-Amz-Expires must be less than a week (604800 seconds)")
        access_key_id, scope, key = self._scope(params["X-Amz-Credential"], amz_date, bad)
        if (stamp - now).total_seconds() > MAX_SKEW_SECONDS:
            raise S3Error("AccessDenied", "Request is not valid yet")
        if now > stamp + datetime.timedelta(seconds=expires):
            raise S3Error("AccessDenied", "Request has expired")
        payload_hash = params.get("X-Amz-Content-Sha256") or UNSIGNED_PAYLOAD
        canonical = canonical_request(
            req,
            [(k, v) for k, v in pairs if k != "X-Amz-Signature"],
            params["X-Amz-SignedHeaders"].split(";"),
            payload_hash,
            presigned=True,
        )
        return self._check(
            access_key_id, key, amz_date, scope, canonical, params["X-Amz-Signature"], True
        )

    # ---- shared ------------------------------------------------------------------------

    def _scope(self, credential: str, amz_date: str, bad: str) -> tuple[str, str, bytes]:
        pieces = credential.split("/")
        if len(pieces) != 5 or pieces[4] != "aws4_request":
            raise S3Error(
                bad, "the credential must be <access key>/<date>/<region>/<service>/aws4_request"
            )
        access_key_id, date, region, service, _ = pieces
        if access_key_id not in self._secrets:
            raise S3Error(
                "InvalidAccessKeyId",
                "the access key id you provided does not exist in our records",
            )
        if date != amz_date[:8]:
            raise S3Error(bad, f"the credential date {date!r} does not match the request date")
        if service != "s3":
            raise S3Error(bad, f"the credential service must be 's3', not {service!r}")
        key = self._key(access_key_id, date, region, service)
        return access_key_id, "/".join(pieces[1:]), key

    def _check(
        self,
        access_key_id: str,
        key: bytes,
        amz_date: str,
        scope: str,
        canonical: str,
        signature: str,
        presigned: bool,
    ) -> Signed:
        to_sign = "\n".join(
            (ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode("utf-8")).hexdigest())
        )
        expected = hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature.strip().lower()):
            raise S3Error(
                "SignatureDoesNotMatch",
                "the request signature we calculated does not match the signature you "
                "provided; check your key and signing method",
                fields={"StringToSign": to_sign, "CanonicalRequest": canonical},
            )
        return Signed(access_key_id, key, amz_date, scope, expected, presigned)


def query_pairs(query_string: str) -> list[tuple[str, str]]:
    """Raw query parameters, percent-decoded (`+` kept: SigV4 encodes spaces as %20)."""
    pairs: list[tuple[str, str]] = []
    for item in query_string.split("&"):
        if not item:
            continue
        name, _, value = item.partition("=")
        try:
            pairs.append(
                (
                    urllib.parse.unquote(name, errors="strict"),
                    urllib.parse.unquote(value, errors="strict"),
                )
            )
        except UnicodeDecodeError:
            raise S3Error("InvalidArgument", "the query string is not valid UTF-8") from None
    return pairs


def canonical_request(
    req: Request,
    pairs: list[tuple[str, str]],
    signed_headers: list[str],
    payload_hash: str,
    *,
    presigned: bool,
) -> str:
    query = "&".join(
        f"{k}={v}"
        for k, v in sorted(
            (uri_encode(k, keep_slash=False), uri_encode(v, keep_slash=False)) for k, v in pairs
        )
    )
    names = [name.strip().lower() for name in signed_headers if name.strip()]
    values: dict[str, list[str]] = {}
    wanted = set(names)
    for name, value in req.headers.items():
        lowered = name.lower()
        if lowered in wanted:
            values.setdefault(lowered, []).append(_SPACES.sub(" ", str(value).strip()))
    headers = "".join(f"{name}:{','.join(values.get(name, []))}\n" for name in names)
    return "\n".join(
        (
            req.method,
            uri_encode(req.path, keep_slash=True),
            query,
            headers,
            ";".join(names),
            payload_hash,
        )
    )


# Query parameters that are part of a SigV2 canonical resource.
V2_SUBRESOURCES: Final = frozenset(
    [
        "accelerate",
        "acl",
        "cors",
        "delete",
        "lifecycle",
        "location",
        "logging",
        "notification",
        "partNumber",
        "policy",
        "requestPayment",
        "restore",
        "tagging",
        "torrent",
        "uploadId",
        "uploads",
        "versionId",
        "versioning",
        "versions",
        "website",
        "response-cache-control",
        "response-content-disposition",
        "response-content-encoding",
        "response-content-language",
        "response-content-type",
        "response-expires",
        "analytics",
        "metrics",
        "inventory",
        "select",
        "select-type",
        "object-lock",
        "replication",
        "storageClass",
    ]
)


def string_to_sign_v2(
    req: Request, pairs: list[tuple[str, str]], date_line: str, content_type: str
) -> str:
    amz: dict[str, list[str]] = {}
    for name, value in req.headers.items():
        lowered = name.lower()
        if lowered.startswith("x-amz-"):
            amz.setdefault(lowered, []).append(str(value).strip())
    amz_lines = "".join(f"{name}:{','.join(amz[name])}\n" for name in sorted(amz))
    resource = uri_encode(req.path, keep_slash=True)
    subresources = sorted((k, v) for k, v in pairs if k in V2_SUBRESOURCES)
    if subresources:
        resource += "?" + "&".join(f"{k}={v}" if v else k for k, v in subresources)
    return (
        f"{req.method}\n{(req.header('content-md5') or '').strip()}\n{content_type.strip()}\n"
        f"{date_line}\n{amz_lines}{resource}"
    )


def _parse_amz_date(text: str, code: str) -> datetime.datetime:
    try:
        return datetime.datetime.strptime(text, _AMZ_DATE).replace(tzinfo=datetime.UTC)
    except ValueError:
        raise S3Error(code, f"X-Amz-Date {text!r} is not of the form YYYYMMDDTHHMMSSZ") from None


def _parse_http_date(text: str) -> datetime.datetime:
    import email.utils

    try:
        stamp = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        raise S3Error("AccessDenied", f"the Date header {text!r} is not an HTTP date") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=datetime.UTC)
    return stamp.astimezone(datetime.UTC)


def is_payload_hash(value: str) -> bool:
    return bool(_HEX64.match(value))
