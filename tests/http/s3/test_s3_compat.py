"""What unmodified boto3 and S3 clients expect beyond the basics (issue 5): every checksum
algorithm S3 names (verified, or 501), checksums of copies, and boto3 over HTTPS, where it
sends `aws-chunked` bodies with trailing checksums by default."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import urllib.parse
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.http.conftest import Client, ServerProcess
from tests.http.s3.conftest import ACCESS_KEY, SECRET_KEY, client_for, s3_error
from tests.http.s3.tls_proxy import make_certificate, tls_proxy

MIB = 1024 * 1024


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def target(bucket: str, key: str) -> str:
    return f"/{bucket}/{urllib.parse.quote(key, safe='/~')}"


def crc32(data: bytes) -> str:
    return b64(zlib.crc32(data).to_bytes(4, "big"))


# ---- authentication -------------------------------------------------------------------------


def test_unsigned_acceptance_is_announced_at_start(
    server: ServerProcess, signed_server: ServerProcess, raw: Client, bucket: str
) -> None:
    warning = "no s3.credentials configured, so S3 requests are accepted unsigned"
    assert warning in server.log_text()
    assert warning not in signed_server.log_text()
    assert "SigV4 verified for 1 access key(s)" in signed_server.log_text()
    assert raw.request("PUT", target(bucket, "k"), b"no signature").status == 200
    refused = signed_server.client.request("PUT", target(bucket, "k"), b"no signature")
    assert (refused.status, s3_error(refused).code) == (403, "AccessDenied")


# ---- ranges ---------------------------------------------------------------------------------


def test_a_range_s3_cannot_use_is_ignored_not_refused(s3: Any, raw: Client, bucket: str) -> None:
    """S3 serves the whole object (200) for a Range that is not one well-formed byte range,
    and answers 416 InvalidRange only for one that starts beyond the object."""
    body = bytes(range(100))
    s3.put_object(Bucket=bucket, Key="r", Body=body)
    for ignored in ("bytes=abc", "bytes=50-10", "bytes=", "bytes=-", "bytes=0-1,5-6", "items=0-5"):
        for method in ("GET", "HEAD"):
            resp = raw.request(method, target(bucket, "r"), headers={"Range": ignored})
            assert resp.status == 200, (ignored, resp)
            assert "content-range" not in resp.headers
            assert resp.headers["content-length"] == "100"
            assert resp.body == (body if method == "GET" else b"")
    got = s3.get_object(Bucket=bucket, Key="r", Range="bytes=oops")
    assert got["Body"].read() == body and "ContentRange" not in got
    part = raw.request("GET", target(bucket, "r"), headers={"Range": "bytes = 10-19"})
    assert (part.status, part.body) == (206, body[10:20])
    beyond = raw.request("GET", target(bucket, "r"), headers={"Range": "bytes=100-"})
    assert (beyond.status, s3_error(beyond).code) == (416, "InvalidRange")
    assert beyond.headers["content-range"] == "bytes */100"


# ---- checksum algorithms ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("algorithm", "digest"),
    [("sha512", lambda d: hashlib.sha512(d).digest()), ("md5", lambda d: hashlib.md5(d).digest())],
)
def test_sha512_and_md5_checksums_are_verified_and_returned(
    raw: Client, bucket: str, algorithm: str, digest: Any
) -> None:
    body = b"a body with a newer checksum " * 500
    header = f"x-amz-checksum-{algorithm}"
    good = raw.request("PUT", target(bucket, "ok"), body, {header: b64(digest(body))})
    assert good.status == 200, good
    assert good.headers[header] == b64(digest(body))
    got = raw.request("GET", target(bucket, "ok"), headers={"x-amz-checksum-mode": "ENABLED"})
    assert got.body == body and got.headers[header] == b64(digest(body))
    bad = raw.request("PUT", target(bucket, "bad"), body, {header: b64(digest(b"other"))})
    assert (bad.status, s3_error(bad).code) == (400, "BadDigest")
    assert raw.request("HEAD", target(bucket, "bad")).status == 404


def test_boto3_sha512_put_and_validated_get(s3: Any, bucket: str) -> None:
    body = os.urandom(100_000)
    put = s3.put_object(Bucket=bucket, Key="k", Body=body, ChecksumAlgorithm="SHA512")
    expected = b64(hashlib.sha512(body).digest())
    assert put["ChecksumSHA512"] == expected
    got = s3.get_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")
    assert got["ChecksumSHA512"] == expected and got["Body"].read() == body


@pytest.mark.parametrize(
    ("algorithm", "size"), [("xxhash64", 8), ("xxhash3", 8), ("xxhash128", 16)]
)
def test_checksums_s3_has_and_we_lack_are_501(
    raw: Client, bucket: str, algorithm: str, size: int
) -> None:
    header = {f"x-amz-checksum-{algorithm}": b64(bytes(size))}
    resp = raw.request("PUT", target(bucket, "k"), b"data", header)
    assert (resp.status, s3_error(resp).code) == (501, "NotImplemented"), resp
    create = raw.request(
        "POST", target(bucket, "k") + "?uploads", None, {"x-amz-checksum-algorithm": algorithm}
    )
    assert (create.status, s3_error(create).code) == (501, "NotImplemented"), create
    copy = raw.request(
        "PUT",
        target(bucket, "c"),
        None,
        {"x-amz-copy-source": f"{bucket}/k", "x-amz-checksum-algorithm": algorithm.upper()},
    )
    assert (copy.status, s3_error(copy).code) == (501, "NotImplemented"), copy
    assert raw.request("HEAD", target(bucket, "k")).status == 404


# ---- checksums of copies ------------------------------------------------------------------


def test_copy_object_computes_the_requested_checksum(s3: Any, bucket: str) -> None:
    body = os.urandom(300_000)
    s3.put_object(Bucket=bucket, Key="src", Body=body)  # boto3 sends CRC32
    kept = s3.copy_object(Bucket=bucket, Key="same", CopySource={"Bucket": bucket, "Key": "src"})
    assert kept["CopyObjectResult"]["ChecksumCRC32"] == crc32(body)
    copied = s3.copy_object(
        Bucket=bucket,
        Key="dst",
        CopySource={"Bucket": bucket, "Key": "src"},
        ChecksumAlgorithm="SHA256",
    )
    expected = b64(hashlib.sha256(body).digest())
    assert copied["CopyObjectResult"]["ChecksumSHA256"] == expected
    got = s3.get_object(Bucket=bucket, Key="dst", ChecksumMode="ENABLED")
    assert got["ChecksumSHA256"] == expected and got["ChecksumType"] == "FULL_OBJECT"
    assert got["Body"].read() == body
    with pytest.raises(ClientError) as info:
        s3.copy_object(
            Bucket=bucket,
            Key="dst2",
            CopySource={"Bucket": bucket, "Key": "src"},
            ChecksumAlgorithm="NOPE",
        )
    assert info.value.response["Error"]["Code"] == "InvalidRequest"


def test_copy_of_a_composite_checksum_object_gets_a_full_object_checksum(
    s3: Any, bucket: str
) -> None:
    body = os.urandom(5 * MIB + 1000)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp", ChecksumAlgorithm="CRC32")
    parts = []
    for number, piece in ((1, body[: 5 * MIB]), (2, body[5 * MIB :])):
        part = s3.upload_part(
            Bucket=bucket, Key="mp", UploadId=upload["UploadId"], PartNumber=number, Body=piece
        )
        parts.append(
            {"PartNumber": number, "ETag": part["ETag"], "ChecksumCRC32": part["ChecksumCRC32"]}
        )
    s3.complete_multipart_upload(
        Bucket=bucket, Key="mp", UploadId=upload["UploadId"], MultipartUpload={"Parts": parts}
    )
    head = s3.head_object(Bucket=bucket, Key="mp", ChecksumMode="ENABLED")
    assert head["ChecksumCRC32"].endswith("-2")
    copied = s3.copy_object(Bucket=bucket, Key="cp", CopySource={"Bucket": bucket, "Key": "mp"})
    assert copied["CopyObjectResult"]["ChecksumCRC32"] == crc32(body)
    got = s3.get_object(Bucket=bucket, Key="cp", ChecksumMode="ENABLED")
    assert got["ChecksumCRC32"] == crc32(body) and got["Body"].read() == body


def test_upload_part_copy_into_an_upload_with_a_checksum_algorithm(s3: Any, bucket: str) -> None:
    source = os.urandom(6 * MIB)
    s3.put_object(Bucket=bucket, Key="src", Body=source)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="dst", ChecksumAlgorithm="CRC32")
    upload_id = upload["UploadId"]
    copied = s3.upload_part_copy(
        Bucket=bucket,
        Key="dst",
        UploadId=upload_id,
        PartNumber=1,
        CopySource={"Bucket": bucket, "Key": "src"},
        CopySourceRange=f"bytes=0-{5 * MIB - 1}",
    )["CopyPartResult"]
    assert copied["ChecksumCRC32"] == crc32(source[: 5 * MIB])
    tail = s3.upload_part(Bucket=bucket, Key="dst", UploadId=upload_id, PartNumber=2, Body=b"tail")
    listed = s3.list_parts(Bucket=bucket, Key="dst", UploadId=upload_id)["Parts"]
    assert listed[0]["ChecksumCRC32"] == copied["ChecksumCRC32"]
    done = s3.complete_multipart_upload(
        Bucket=bucket,
        Key="dst",
        UploadId=upload_id,
        MultipartUpload={
            "Parts": [
                {
                    "PartNumber": 1,
                    "ETag": copied["ETag"],
                    "ChecksumCRC32": copied["ChecksumCRC32"],
                },
                {"PartNumber": 2, "ETag": tail["ETag"], "ChecksumCRC32": tail["ChecksumCRC32"]},
            ]
        },
    )
    assert done["ChecksumCRC32"].endswith("-2")
    got = s3.get_object(Bucket=bucket, Key="dst")
    assert got["Body"].read() == source[: 5 * MIB] + b"tail"


def test_parts_sent_without_the_uploads_checksum_get_it_computed(
    server: ServerProcess, bucket: str
) -> None:
    """boto3 with request_checksum_calculation="when_required" sends UploadPart without a
    checksum even when the upload was created with a ChecksumAlgorithm."""
    s3 = client_for(server.port, request_checksum_calculation="when_required")
    first, last = os.urandom(5 * MIB), b"last part"
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="k", ChecksumAlgorithm="SHA256")[
        "UploadId"
    ]
    parts = []
    for number, piece in ((1, first), (2, last)):
        sent = s3.upload_part(
            Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=number, Body=piece
        )
        assert sent["ChecksumSHA256"] == b64(hashlib.sha256(piece).digest())
        parts.append({"PartNumber": number, "ETag": sent["ETag"]})
    done = s3.complete_multipart_upload(
        Bucket=bucket, Key="k", UploadId=upload_id, MultipartUpload={"Parts": parts}
    )
    composite = hashlib.sha256(
        hashlib.sha256(first).digest() + hashlib.sha256(last).digest()
    ).digest()
    assert done["ChecksumSHA256"] == f"{b64(composite)}-2"
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == first + last


# ---- GetObjectAttributes ------------------------------------------------------------------

ALL_ATTRIBUTES = ["ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize"]


def test_get_object_attributes_of_a_single_part_object(s3: Any, raw: Client, bucket: str) -> None:
    body = b"attributes please"
    put = s3.put_object(Bucket=bucket, Key="k", Body=body)
    got = s3.get_object_attributes(Bucket=bucket, Key="k", ObjectAttributes=ALL_ATTRIBUTES)
    assert got["ETag"] == put["ETag"].strip('"') == hashlib.md5(body).hexdigest()
    assert got["Checksum"] == {"ChecksumCRC32": crc32(body), "ChecksumType": "FULL_OBJECT"}
    assert got["ObjectSize"] == len(body) and got["StorageClass"] == "STANDARD"
    assert "ObjectParts" not in got and got["LastModified"]
    only = s3.get_object_attributes(Bucket=bucket, Key="k", ObjectAttributes=["ObjectSize"])
    assert only["ObjectSize"] == len(body) and "ETag" not in only
    with pytest.raises(ClientError) as info:
        s3.get_object_attributes(Bucket=bucket, Key="missing", ObjectAttributes=["ETag"])
    assert info.value.response["Error"]["Code"] == "NoSuchKey"
    missing = raw.request("GET", target(bucket, "k") + "?attributes")
    assert (missing.status, s3_error(missing).code) == (400, "InvalidArgument")
    unknown = raw.request(
        "GET", target(bucket, "k") + "?attributes", headers={"x-amz-object-attributes": "Owner"}
    )
    assert (unknown.status, s3_error(unknown).code) == (400, "InvalidArgument")
    put_attrs = raw.request("PUT", target(bucket, "k") + "?attributes", b"x")
    assert (put_attrs.status, s3_error(put_attrs).code) == (405, "MethodNotAllowed")
    assert raw.request("GET", target(bucket, "k")).body == body


def test_get_object_attributes_of_a_multipart_object(s3: Any, bucket: str) -> None:
    sizes = [5 * MIB, 5 * MIB + 1, 7]
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    parts = []
    for number, size in enumerate(sizes, start=1):
        etag = s3.upload_part(
            Bucket=bucket, Key="mp", UploadId=upload_id, PartNumber=number, Body=b"p" * size
        )["ETag"]
        parts.append({"PartNumber": number, "ETag": etag})
    done = s3.complete_multipart_upload(
        Bucket=bucket, Key="mp", UploadId=upload_id, MultipartUpload={"Parts": parts}
    )
    got = s3.get_object_attributes(Bucket=bucket, Key="mp", ObjectAttributes=ALL_ATTRIBUTES)
    assert got["ETag"] == done["ETag"].strip('"') and got["ObjectSize"] == sum(sizes)
    listed = got["ObjectParts"]
    assert listed["TotalPartsCount"] == 3 and listed["IsTruncated"] is False
    assert [(p["PartNumber"], p["Size"]) for p in listed["Parts"]] == [
        (1, sizes[0]),
        (2, sizes[1]),
        (3, 7),
    ]
    page = s3.get_object_attributes(
        Bucket=bucket, Key="mp", ObjectAttributes=["ObjectParts"], MaxParts=2
    )["ObjectParts"]
    assert page["IsTruncated"] is True and page["NextPartNumberMarker"] == 2
    assert [p["PartNumber"] for p in page["Parts"]] == [1, 2]
    rest = s3.get_object_attributes(
        Bucket=bucket, Key="mp", ObjectAttributes=["ObjectParts"], MaxParts=2, PartNumberMarker=2
    )["ObjectParts"]
    assert rest["IsTruncated"] is False and [p["PartNumber"] for p in rest["Parts"]] == [3]


# ---- boto3 over HTTPS: aws-chunked bodies with trailing checksums --------------------------


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    made = make_certificate(tmp_path_factory.mktemp("tls"))
    if made is None:
        pytest.skip("no openssl command to make a test certificate")
    return made


def _https(port: int) -> Any:
    """A default boto3 client talking HTTPS to `port`; `client.sent`: the headers it sent."""
    client = boto3.client(
        "s3",
        endpoint_url=f"https://127.0.0.1:{port}",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
        verify=False,
        config=Config(retries={"max_attempts": 1}),
    )
    sent: list[dict[str, str]] = []

    def record(request: Any, **_: Any) -> None:
        sent.append(
            {
                k.lower(): v.decode() if isinstance(v, bytes) else str(v)
                for k, v in request.headers.items()
            }
        )

    client.meta.events.register("before-send.s3.*", record)
    client.sent = sent
    return client


@pytest.fixture(params=["unsigned", "signed"])
def https_s3(request: pytest.FixtureRequest, certificate: tuple[Path, Path]) -> Iterator[Any]:
    backend: ServerProcess = request.getfixturevalue(
        "server" if request.param == "unsigned" else "signed_server"
    )
    with tls_proxy(backend.port, *certificate) as port, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the self-signed certificate is not verified
        yield _https(port)


def _chunked(headers: dict[str, str]) -> bool:
    return (
        headers.get("content-encoding", "").endswith("aws-chunked")
        and headers.get("x-amz-content-sha256") == "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
        and "x-amz-trailer" in headers
    )


def test_boto3_over_https_puts_aws_chunked_bodies_with_trailers(https_s3: Any) -> None:
    s3 = https_s3
    bucket = "https-chunked"
    body = os.urandom(200_000)
    put = s3.put_object(Bucket=bucket, Key="k", Body=body, ContentType="text/plain")
    assert _chunked(s3.sent[-1]), s3.sent[-1]  # what boto3 sends by default over TLS
    assert put["ChecksumCRC32"] == crc32(body)
    got = s3.get_object(Bucket=bucket, Key="k")
    assert got["Body"].read() == body and got["ChecksumCRC32"] == crc32(body)
    assert got["ContentType"] == "text/plain" and "ContentEncoding" not in got
    empty = s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    assert _chunked(s3.sent[-1]) and empty["ChecksumCRC32"] == crc32(b"")
    assert s3.get_object(Bucket=bucket, Key="empty")["Body"].read() == b""
    sha = s3.put_object(Bucket=bucket, Key="sha", Body=body, ChecksumAlgorithm="SHA256")
    assert sha["ChecksumSHA256"] == b64(hashlib.sha256(body).digest())
    gz = s3.put_object(Bucket=bucket, Key="gz", Body=body, ContentEncoding="gzip")
    assert s3.sent[-1]["content-encoding"] == "gzip,aws-chunked" and gz["ETag"]
    assert s3.head_object(Bucket=bucket, Key="gz")["ContentEncoding"] == "gzip"


def test_boto3_over_https_non_seekable_bodies(https_s3: Any) -> None:
    s3 = https_s3
    bucket = "https-chunked"
    data = b"streamed, not seekable " * 1000

    class Stream(io.RawIOBase):
        def __init__(self) -> None:
            self.inner = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            chunk = self.inner.read(len(buffer))
            buffer[: len(chunk)] = chunk
            return len(chunk)

    s3.put_object(Bucket=bucket, Key="stream", Body=Stream(), ContentLength=len(data))
    assert s3.get_object(Bucket=bucket, Key="stream")["Body"].read() == data
    # Without a length, boto3 sends no x-amz-decoded-content-length: S3 answers 411.
    with pytest.raises(ClientError) as info:
        s3.put_object(Bucket=bucket, Key="nolength", Body=Stream())
    assert info.value.response["Error"]["Code"] == "MissingContentLength"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 411


def test_boto3_over_https_multipart_transfer(https_s3: Any, tmp_path: Path) -> None:
    s3 = https_s3
    bucket = "https-chunked"
    source = tmp_path / "up.bin"
    data = os.urandom(11 * MIB)
    source.write_bytes(data)
    config = TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB)
    s3.upload_file(str(source), bucket, "mp", Config=config)
    assert sum(_chunked(h) for h in s3.sent) == 3  # every part an aws-chunked body
    head = s3.head_object(Bucket=bucket, Key="mp", ChecksumMode="ENABLED")
    assert head["ETag"].endswith('-3"') and head["ContentLength"] == len(data)
    assert head["ChecksumType"] == "COMPOSITE"
    s3.download_file(bucket, "mp", str(tmp_path / "down.bin"), Config=config)
    assert (tmp_path / "down.bin").read_bytes() == data
    part = s3.get_object(Bucket=bucket, Key="mp", PartNumber=3)
    assert part["Body"].read() == data[10 * MIB :] and part["PartsCount"] == 3
