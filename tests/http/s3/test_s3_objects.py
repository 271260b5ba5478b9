"""PutObject, GetObject, HeadObject, DeleteObject(s), CopyObject over HTTP, bad inputs included."""

from __future__ import annotations

import base64
import datetime
import email.utils
import hashlib
import urllib.parse
import zlib
from typing import Any

import pytest
from botocore.exceptions import ClientError

from amberio.core import crc64nvme
from tests.http.conftest import Client
from tests.http.s3.conftest import s3_error, texts, xml_doc


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def target(bucket: str, key: str) -> str:
    return f"/{bucket}/{urllib.parse.quote(key, safe='/~')}"


def err_code(exc: ClientError) -> tuple[int, str]:
    return exc.response["ResponseMetadata"]["HTTPStatusCode"], exc.response["Error"]["Code"]


def test_put_get_head_round_trip_with_metadata(s3: Any, bucket: str) -> None:
    body = b"hello amberio"
    put = s3.put_object(
        Bucket=bucket,
        Key="docs/a.txt",
        Body=body,
        ContentType="text/plain",
        CacheControl="max-age=60",
        ContentDisposition='attachment; filename="a.txt"',
        ContentEncoding="identity",
        ContentLanguage="en",
        Expires=datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC),
        Metadata={"color": "blue", "Owner": "x"},
    )
    assert put["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    got = s3.get_object(Bucket=bucket, Key="docs/a.txt")
    assert got["Body"].read() == body
    assert got["ContentType"] == "text/plain"
    assert got["CacheControl"] == "max-age=60"
    assert got["ContentDisposition"] == 'attachment; filename="a.txt"'
    assert got["ContentEncoding"] == "identity"
    assert got["ContentLanguage"] == "en"
    assert got["Metadata"] == {"color": "blue", "owner": "x"}
    assert got["ETag"] == put["ETag"]
    assert got["AcceptRanges"] == "bytes"
    head = s3.head_object(Bucket=bucket, Key="docs/a.txt")
    assert head["ContentLength"] == len(body)
    assert head["Metadata"] == {"color": "blue", "owner": "x"}
    assert abs((head["LastModified"] - datetime.datetime.now(datetime.UTC)).total_seconds()) < 60


def test_missing_key_is_nosuchkey_and_head_has_no_body(s3: Any, raw: Client, bucket: str) -> None:
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket=bucket, Key="nope")
    assert err_code(info.value) == (404, "NoSuchKey")
    resp = raw.request("HEAD", target(bucket, "nope"))
    assert resp.status == 404 and resp.body == b""
    assert resp.headers["x-amz-request-id"]


def test_keys_are_kept_exactly(s3: Any, bucket: str) -> None:
    keys = [
        "/leading",
        "a//double",
        "dot/./seg",
        "dots/../up",
        "sp ace+plus%pct",
        "ünï ©",
        "tab\tx",
        "ctl\x01\x1f",
        "q?mark#hash",
        "~tilde",
    ]
    for i, key in enumerate(keys):
        s3.put_object(Bucket=bucket, Key=key, Body=str(i).encode())
    for i, key in enumerate(keys):
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == str(i).encode(), key
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert listed == sorted(keys)


def test_content_md5(raw: Client, bucket: str) -> None:
    body = b"payload"
    good = raw.request(
        "PUT", target(bucket, "k"), body, {"Content-MD5": b64(hashlib.md5(body).digest())}
    )
    assert good.status == 200, good
    bad = raw.request(
        "PUT", target(bucket, "k2"), body, {"Content-MD5": b64(hashlib.md5(b"x").digest())}
    )
    assert s3_error(bad).code == "BadDigest" and bad.status == 400
    malformed = raw.request("PUT", target(bucket, "k3"), body, {"Content-MD5": "not-base64!"})
    assert s3_error(malformed).code == "InvalidDigest" and malformed.status == 400
    short = raw.request("PUT", target(bucket, "k3"), body, {"Content-MD5": b64(b"1234")})
    assert s3_error(short).code == "InvalidDigest"
    for key in ("k2", "k3"):
        assert raw.request("HEAD", target(bucket, key)).status == 404


@pytest.mark.parametrize(
    ("algorithm", "digest"),
    [
        ("crc32", lambda d: zlib.crc32(d).to_bytes(4, "big")),
        ("sha1", lambda d: hashlib.sha1(d).digest()),
        ("sha256", lambda d: hashlib.sha256(d).digest()),
    ],
)
def test_checksum_headers_verified(raw: Client, bucket: str, algorithm: str, digest: Any) -> None:
    body = b"checksummed body" * 1000
    header = f"x-amz-checksum-{algorithm}"
    good = raw.request("PUT", target(bucket, "ok"), body, {header: b64(digest(body))})
    assert good.status == 200, good
    assert good.headers[header] == b64(digest(body))
    bad = raw.request("PUT", target(bucket, "bad"), body, {header: b64(digest(b"other"))})
    assert bad.status == 400 and s3_error(bad).code == "BadDigest"
    garbage = raw.request("PUT", target(bucket, "bad"), body, {header: "@@@"})
    assert garbage.status == 400 and s3_error(garbage).code == "InvalidRequest"
    assert raw.request("HEAD", target(bucket, "bad")).status == 404


def test_crc32c_checksum(raw: Client, bucket: str) -> None:
    from amberio.http.s3.checksums import Crc32c

    body = bytes(range(256)) * 1000
    hasher = Crc32c()
    hasher.update(body)
    good = raw.request(
        "PUT", target(bucket, "c"), body, {"x-amz-checksum-crc32c": b64(hasher.digest())}
    )
    assert good.status == 200, good
    got = raw.request("GET", target(bucket, "c"), headers={"x-amz-checksum-mode": "ENABLED"})
    assert got.headers["x-amz-checksum-crc32c"] == b64(hasher.digest())
    bad = raw.request("PUT", target(bucket, "d"), body, {"x-amz-checksum-crc32c": "AAAAAA=="})
    assert s3_error(bad).code == "BadDigest"
    two = raw.request(
        "PUT",
        target(bucket, "d"),
        body,
        {"x-amz-checksum-crc32c": "AAAAAA==", "x-amz-checksum-crc32": "AAAAAA=="},
    )
    assert s3_error(two).code == "InvalidRequest"
    nvme = raw.request(
        "PUT", target(bucket, "d"), body, {"x-amz-checksum-crc64nvme": "AAAAAAAAAAA="}
    )
    assert (nvme.status, s3_error(nvme).code) == (400, "BadDigest")
    good = base64.b64encode(crc64nvme(body).to_bytes(8, "big")).decode()
    stored = raw.request("PUT", target(bucket, "d"), body, {"x-amz-checksum-crc64nvme": good})
    assert stored.status == 200 and stored.headers.get("x-amz-checksum-crc64nvme") == good


def test_payload_sha256_mismatch(raw: Client, bucket: str) -> None:
    resp = raw.request(
        "PUT",
        target(bucket, "k"),
        b"abc",
        {"x-amz-content-sha256": hashlib.sha256(b"abd").hexdigest()},
    )
    assert resp.status == 400 and s3_error(resp).code == "XAmzContentSHA256Mismatch"
    bad = raw.request("PUT", target(bucket, "k"), b"abc", {"x-amz-content-sha256": "nonsense"})
    assert bad.status == 400 and s3_error(bad).code == "InvalidArgument"
    assert raw.request("HEAD", target(bucket, "k")).status == 404


def test_conditional_writes(s3: Any, bucket: str) -> None:
    first = s3.put_object(Bucket=bucket, Key="c", Body=b"1", IfNoneMatch="*")
    with pytest.raises(ClientError) as info:
        s3.put_object(Bucket=bucket, Key="c", Body=b"2", IfNoneMatch="*")
    assert err_code(info.value) == (412, "PreconditionFailed")
    s3.put_object(Bucket=bucket, Key="c", Body=b"3", IfMatch=first["ETag"])
    with pytest.raises(ClientError) as info:
        s3.put_object(Bucket=bucket, Key="c", Body=b"4", IfMatch=first["ETag"])
    assert err_code(info.value) == (412, "PreconditionFailed")
    with pytest.raises(ClientError) as info:
        s3.put_object(Bucket=bucket, Key="absent", Body=b"4", IfMatch=first["ETag"])
    assert err_code(info.value) == (404, "NoSuchKey")
    assert s3.get_object(Bucket=bucket, Key="c")["Body"].read() == b"3"


def test_ranges_and_part_numbers(s3: Any, raw: Client, bucket: str) -> None:
    body = bytes(range(256)) * 40
    s3.put_object(Bucket=bucket, Key="r", Body=body)
    got = s3.get_object(Bucket=bucket, Key="r", Range="bytes=10-19")
    assert got["Body"].read() == body[10:20]
    assert got["ContentRange"] == f"bytes 10-19/{len(body)}"
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert s3.get_object(Bucket=bucket, Key="r", Range="bytes=-5")["Body"].read() == body[-5:]
    resp = raw.request("GET", target(bucket, "r"), headers={"Range": f"bytes={len(body)}-"})
    err = s3_error(resp)
    assert (resp.status, err.code) == (416, "InvalidRange")
    assert resp.headers["content-range"] == f"bytes */{len(body)}"
    part = s3.get_object(Bucket=bucket, Key="r", PartNumber=1)
    assert part["Body"].read() == body
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket=bucket, Key="r", PartNumber=2)
    assert err_code(info.value) == (416, "InvalidPartNumber")
    for bad in ("0", "10001", "x", "-1"):
        resp = raw.request("GET", target(bucket, "r") + f"?partNumber={bad}")
        assert (resp.status, s3_error(resp).code) == (400, "InvalidArgument"), bad
    both = raw.request("GET", target(bucket, "r") + "?partNumber=1", headers={"Range": "bytes=0-1"})
    assert (both.status, s3_error(both).code) == (400, "InvalidRequest")


def test_read_conditionals(s3: Any, raw: Client, bucket: str) -> None:
    put = s3.put_object(Bucket=bucket, Key="k", Body=b"data")
    etag = put["ETag"]
    modified = s3.head_object(Bucket=bucket, Key="k")["LastModified"].astimezone(datetime.UTC)
    later = email.utils.format_datetime(modified + datetime.timedelta(hours=1), usegmt=True)
    earlier = email.utils.format_datetime(modified - datetime.timedelta(hours=1), usegmt=True)
    t = target(bucket, "k")

    def get(**headers: str) -> int:
        return raw.request("GET", t, headers=headers).status

    assert get(**{"If-Match": etag}) == 200
    assert get(**{"If-Match": '"nope"'}) == 412
    assert get(**{"If-None-Match": etag}) == 304
    assert get(**{"If-None-Match": '"nope"'}) == 200
    assert get(**{"If-Modified-Since": later}) == 304
    assert get(**{"If-Modified-Since": earlier}) == 200
    assert get(**{"If-Unmodified-Since": earlier}) == 412
    assert get(**{"If-Unmodified-Since": later}) == 200
    # S3's combinations: If-Match true wins over If-Unmodified-Since false, and so on
    assert get(**{"If-Match": etag, "If-Unmodified-Since": earlier}) == 200
    assert get(**{"If-None-Match": '"nope"', "If-Modified-Since": later}) == 200
    not_modified = raw.request("GET", t, headers={"If-None-Match": etag})
    assert not_modified.body == b"" and not_modified.headers["etag"] == etag
    failed = raw.request("GET", t, headers={"If-Match": '"nope"'})
    assert s3_error(failed).code == "PreconditionFailed"
    assert raw.request("HEAD", t, headers={"If-Match": '"nope"'}).status == 412


def test_response_overrides(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="o", Body=b"x", ContentType="text/plain")
    got = s3.get_object(
        Bucket=bucket,
        Key="o",
        ResponseContentType="application/json",
        ResponseContentDisposition="inline",
        ResponseCacheControl="no-store",
        ResponseContentEncoding="gzip",
        ResponseContentLanguage="fr",
        ResponseExpires=datetime.datetime(2031, 1, 1, tzinfo=datetime.UTC),
    )
    headers = got["ResponseMetadata"]["HTTPHeaders"]
    assert headers["content-type"] == "application/json"
    assert headers["content-disposition"] == "inline"
    assert headers["cache-control"] == "no-store"
    assert headers["content-encoding"] == "gzip"
    assert headers["content-language"] == "fr"
    assert "2031" in headers["expires"]


def test_checksum_mode_returns_stored_checksum_only_for_whole_object(
    s3: Any, raw: Client, bucket: str
) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"hello world")  # boto3 sends x-amz-checksum-crc32
    whole = raw.request("GET", target(bucket, "k"), headers={"x-amz-checksum-mode": "ENABLED"})
    assert whole.headers["x-amz-checksum-crc32"] == "DUoRhQ=="
    ranged = raw.request(
        "GET", target(bucket, "k"), headers={"x-amz-checksum-mode": "ENABLED", "Range": "bytes=0-1"}
    )
    assert "x-amz-checksum-crc32" not in ranged.headers
    plain = raw.request("GET", target(bucket, "k"))
    assert "x-amz-checksum-crc32" not in plain.headers
    got = s3.get_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")
    assert got["ChecksumCRC32"] == "DUoRhQ==" and got["Body"].read() == b"hello world"


@pytest.mark.parametrize(
    ("method", "suffix", "headers"),
    [
        ("GET", "?versionId=abc", {}),
        ("HEAD", "?versionId=abc", {}),
        ("DELETE", "?versionId=abc", {}),
        ("PUT", "", {"x-amz-server-side-encryption-customer-algorithm": "AES256"}),
        ("GET", "", {"x-amz-server-side-encryption-customer-key": "a2V5"}),
        ("PUT", "", {"x-amz-server-side-encryption": "aws:kms"}),
        ("PUT", "", {"x-amz-server-side-encryption-aws-kms-key-id": "k"}),
        ("PUT", "", {"x-amz-acl": "private"}),
        ("PUT", "", {"x-amz-grant-read": "id=x"}),
        ("PUT", "", {"x-amz-object-lock-mode": "GOVERNANCE"}),
        ("PUT", "", {"x-amz-object-lock-legal-hold": "ON"}),
        ("PUT", "", {"x-amz-tagging": "a=b"}),
        ("PUT", "", {"x-amz-website-redirect-location": "/x"}),
        ("GET", "?tagging", {}),
        ("PUT", "?acl", {}),
        ("GET", "?versions", {}),
        ("PUT", "", {"x-amz-storage-class": "GLACIER"}),
    ],
)
def test_unsupported_features_are_501(
    raw: Client, bucket: str, method: str, suffix: str, headers: dict[str, str]
) -> None:
    resp = raw.request(
        method, target(bucket, "obj") + suffix, b"x" if method == "PUT" else None, headers
    )
    assert resp.status == 501, resp
    if method != "HEAD":
        assert s3_error(resp).code == "NotImplemented"
    assert raw.request("HEAD", target(bucket, "obj")).status == 404


def test_bad_object_names(raw: Client) -> None:
    long_key = raw.request("PUT", "/good-bucket/" + "k" * 1025, b"x")
    assert (long_key.status, s3_error(long_key).code) == (400, "KeyTooLongError")
    nul = raw.request("PUT", "/good-bucket/a%00b", b"x")
    assert (nul.status, s3_error(nul).code) == (400, "InvalidArgument")
    lossy = raw.request("PUT", "/good-bucket/a%FFb", b"x")
    assert (lossy.status, s3_error(lossy).code) == (400, "InvalidURI")
    for bad in ("Bad_Bucket", "ab", "a" * 64, "192.168.0.1"):
        resp = raw.request("PUT", f"/{bad}/key", b"x")
        assert (resp.status, s3_error(resp).code) == (400, "InvalidBucketName"), bad
    bad_query = raw.request("GET", "/good-bucket/k?partNumber=%zz")
    assert bad_query.status == 400 and s3_error(bad_query).code == "InvalidRequest"
    ok = raw.request("PUT", "/good-bucket/" + "k" * 1024, b"x")
    assert ok.status == 200


def test_missing_content_length_and_incomplete_bodies(raw: Client, bucket: str) -> None:
    resp = raw.request("PUT", target(bucket, "chunky"), iter([b"ab", b"cd"]))
    assert resp.status == 200  # plain HTTP chunked transfer encoding is accepted
    assert raw.request("GET", target(bucket, "chunky")).body == b"abcd"


def test_delete_is_204_even_when_absent(s3: Any, raw: Client, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="d", Body=b"x")
    assert raw.request("DELETE", target(bucket, "d")).status == 204
    assert raw.request("DELETE", target(bucket, "d")).status == 204
    assert raw.request("DELETE", target(bucket, "never")).status == 204
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket=bucket, Key="d")
    assert err_code(info.value) == (404, "NoSuchKey")


def test_delete_objects(s3: Any, raw: Client, bucket: str) -> None:
    for key in ("a", "b", "c"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    result = s3.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": "a"}, {"Key": "b"}, {"Key": "zz"}]}
    )
    assert sorted(d["Key"] for d in result["Deleted"]) == ["a", "b", "zz"]
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["c"]
    quiet = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "c"}], "Quiet": True})
    assert "Deleted" not in quiet
    t = f"/{bucket}?delete"
    for body in (
        b"<Delete><Object><Key>a</Key></Object>",
        b"<Delete></Delete>",
        b"garbage",
        b'<!DOCTYPE x [<!ENTITY e "e">]><Delete><Object><Key>&e;</Key></Object></Delete>',
        b"<Delete>" + b"<Object><Key>k</Key></Object>" * 1001 + b"</Delete>",
    ):
        resp = raw.request("POST", t, body)
        assert (resp.status, s3_error(resp).code) == (400, "MalformedXML"), body[:50]
    versioned = raw.request(
        "POST", t, b"<Delete><Object><Key>a</Key><VersionId>1</VersionId></Object></Delete>"
    )
    assert versioned.status == 501
    bad_md5 = raw.request(
        "POST",
        t,
        b"<Delete><Object><Key>a</Key></Object></Delete>",
        {"Content-MD5": b64(hashlib.md5(b"x").digest())},
    )
    assert s3_error(bad_md5).code == "BadDigest"
    # AWS CLI v2 checksums DeleteObjects bodies with CRC64NVME by default.
    s3.put_object(Bucket=bucket, Key="v2", Body=b"x")
    doc = b"<Delete><Object><Key>v2</Key></Object></Delete>"
    wrong = b64(crc64nvme(doc + b"!").to_bytes(8, "big"))
    bad_nvme = raw.request("POST", t, doc, {"x-amz-checksum-crc64nvme": wrong})
    assert (bad_nvme.status, s3_error(bad_nvme).code) == (400, "BadDigest")
    right = b64(crc64nvme(doc).to_bytes(8, "big"))
    assert raw.request("POST", t, doc, {"x-amz-checksum-crc64nvme": right}).status == 200
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)


def test_copy_object(s3: Any, raw: Client, bucket: str) -> None:
    s3.put_object(
        Bucket=bucket, Key="src", Body=b"copy me", ContentType="text/x-src", Metadata={"m": "1"}
    )
    copied = s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"})
    assert copied["CopyObjectResult"]["ETag"] == f'"{hashlib.md5(b"copy me").hexdigest()}"'
    got = s3.get_object(Bucket=bucket, Key="dst")
    assert (got["Body"].read(), got["ContentType"], got["Metadata"]) == (
        b"copy me",
        "text/x-src",
        {"m": "1"},
    )
    s3.copy_object(
        Bucket=bucket,
        Key="dst2",
        CopySource=f"{bucket}/src",
        MetadataDirective="REPLACE",
        ContentType="text/new",
        Metadata={"n": "2"},
    )
    got = s3.get_object(Bucket=bucket, Key="dst2")
    assert (got["ContentType"], got["Metadata"]) == ("text/new", {"n": "2"})
    with pytest.raises(ClientError) as info:
        s3.copy_object(Bucket=bucket, Key="src", CopySource=f"{bucket}/src")
    assert err_code(info.value) == (400, "InvalidRequest")
    s3.copy_object(
        Bucket=bucket, Key="src", CopySource=f"{bucket}/src", MetadataDirective="REPLACE"
    )
    with pytest.raises(ClientError) as info:
        s3.copy_object(Bucket=bucket, Key="x", CopySource=f"{bucket}/missing")
    assert err_code(info.value) == (404, "NoSuchKey")
    with pytest.raises(ClientError) as info:
        s3.copy_object(
            Bucket=bucket, Key="x", CopySource=f"{bucket}/src", CopySourceIfMatch='"nope"'
        )
    assert err_code(info.value) == (412, "PreconditionFailed")
    for source in ("nobucketkey", "/Bad_Bucket/k", f"{bucket}/src?versionId=1"):
        resp = raw.request("PUT", target(bucket, "x"), b"", {"x-amz-copy-source": source})
        assert resp.status in (400, 501), (source, resp)
    root = xml_doc(
        raw.request("PUT", target(bucket, "y"), b"", {"x-amz-copy-source": f"/{bucket}/src"})
    )
    assert texts(root, "ETag")
