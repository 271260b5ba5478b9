"""Buckets, keys and the blob paths they map to (contract §4, §11).

A bucket is a namespace: the object `key` of bucket `b` is the blob path `b/key`, kept exactly
(no normalization: `//`, a leading `/`, `.` and `..` segments and control characters other than
NUL are part of the key). The gateway's own records (explicit buckets, multipart uploads and
their parts) live under `INTERNAL`, whose first segment can never be a bucket name, so no S3
listing shows them and no S3 key can address them.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final

from amberio.http.s3.errors import S3Error

MAX_KEY_BYTES: Final = 1024
INTERNAL: Final = ".amberio-s3"
BUCKET_RECORDS: Final = f"{INTERNAL}/buckets/"
UPLOAD_RECORDS: Final = f"{INTERNAL}/uploads/"
PART_BLOBS: Final = f"{INTERNAL}/parts/"

# Greater than every blob path that starts with a given prefix and is at most a few KiB long:
# LIST's `after` is exclusive, so "after prefix + SKIP" jumps past everything under prefix.
SKIP_PAST: Final = "\U0010ffff" * 600

_BUCKET_RE: Final = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_UPLOAD_ID_RE: Final = re.compile(r"^[0-9a-f]{32}$")


def bucket_name_problem(name: str) -> str | None:
    """Why `name` is not a valid bucket name (S3 naming rules), or None when it is."""
    if not 3 <= len(name) <= 63:
        return "bucket names are 3 to 63 characters long"
    if not _BUCKET_RE.match(name):
        return (
            "bucket names use lowercase letters, digits, '.' and '-', and start and end with "
            "a letter or a digit"
        )
    if ".." in name or ".-" in name or "-." in name:
        return "bucket names must not contain '..', '.-' or '-.'"
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        pass
    else:
        return "bucket names must not look like an IP address"
    if name.startswith(("xn--", "sthree-", "amzn-s3-demo-")):
        return "bucket names must not start with 'xn--', 'sthree-' or 'amzn-s3-demo-'"
    if name.endswith(("-s3alias", "--ol-s3", "--x-s3", ".mrap", "--table-s3")):
        return "bucket names must not end with a reserved suffix"
    return None


def is_bucket_name(name: str) -> bool:
    return bucket_name_problem(name) is None


def check_bucket(name: str) -> str:
    problem = bucket_name_problem(name)
    if problem is not None:
        raise S3Error("InvalidBucketName", f"the bucket name {name!r} is not valid: {problem}")
    return name


def check_key(key: str) -> str:
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise S3Error("KeyTooLongError", f"object keys are at most {MAX_KEY_BYTES} bytes")
    if "\x00" in key:
        raise S3Error("InvalidArgument", "object keys must not contain NUL")
    if "\ufffd" in key or any(0xD800 <= ord(ch) <= 0xDFFF for ch in key):
        # The HTTP server decodes the path lossily: U+FFFD is what invalid UTF-8 arrives as.
        raise S3Error("InvalidURI", "the object key is not valid UTF-8")
    return key


def blob_path(bucket: str, key: str) -> str:
    return f"{bucket}/{key}"


def bucket_record(bucket: str) -> str:
    return BUCKET_RECORDS + bucket


def upload_prefix(bucket: str) -> str:
    return f"{UPLOAD_RECORDS}{bucket}/"


def upload_record(bucket: str, upload_id: str) -> str:
    return f"{UPLOAD_RECORDS}{bucket}/{upload_id}"


def part_prefix(upload_id: str) -> str:
    return f"{PART_BLOBS}{upload_id}/"


def part_blob(upload_id: str, part_number: int) -> str:
    return f"{PART_BLOBS}{upload_id}/{part_number:05d}"


def is_upload_id(text: str) -> bool:
    return bool(_UPLOAD_ID_RE.match(text))
