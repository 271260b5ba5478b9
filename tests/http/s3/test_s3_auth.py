"""SigV4 (header auth, presigned URLs, streaming chunk signatures) and aws-chunked bodies."""

from __future__ import annotations

import base64
import datetime
import urllib.error
import urllib.request
import zlib
from typing import Any

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from amberio.http.s3.auth import Signed, signing_key
from tests.http.conftest import Client, ServerProcess
from tests.http.s3.conftest import ACCESS_KEY, SECRET_KEY, client_for, s3_error
from tests.http.s3.test_s3_units import encode_chunked

AMZ = "%Y%m%dT%H%M%SZ"


def code_of(exc: ClientError) -> tuple[int, str]:
    return exc.response["ResponseMetadata"]["HTTPStatusCode"], exc.response["Error"]["Code"]


class _StreamingAuth(S3SigV4Auth):
    """botocore's signer, with the payload hash a streaming upload announces."""

    def __init__(self, credentials: Credentials, content_sha256: str) -> None:
        super().__init__(credentials, "s3", "us-east-1")
        self.content_sha256 = content_sha256

    def payload(self, request: Any) -> str:
        return self.content_sha256


def sign(
    port: int,
    method: str,
    path: str,
    headers: dict[str, str],
    *,
    when: datetime.datetime | None = None,
    secret: str = SECRET_KEY,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, str]:
    """Headers botocore's signer adds for this request, signed at `when` (default now)."""
    stamp = when or datetime.datetime.now(datetime.UTC)

    class Fixed(datetime.datetime):
        @classmethod
        def utcnow(cls) -> datetime.datetime:
            return stamp.replace(tzinfo=None)

        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return stamp if tz else stamp.replace(tzinfo=None)

    with monkeypatch.context() as patch:
        patch.setattr("botocore.auth.datetime.datetime", Fixed)
        aws = AWSRequest(method=method, url=f"http://127.0.0.1:{port}{path}", headers=headers)
        content_sha256 = headers.get("x-amz-content-sha256")
        if content_sha256 is not None:
            _StreamingAuth(Credentials(ACCESS_KEY, secret), content_sha256).add_auth(aws)
        else:
            S3SigV4Auth(Credentials(ACCESS_KEY, secret), "s3", "us-east-1").add_auth(aws)
    return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in aws.headers.items()}


def test_signed_round_trip(signed_s3: Any) -> None:
    signed_s3.put_object(Bucket="sig-bucket", Key="k y", Body=b"signed")
    assert signed_s3.get_object(Bucket="sig-bucket", Key="k y")["Body"].read() == b"signed"
    assert [o["Key"] for o in signed_s3.list_objects_v2(Bucket="sig-bucket")["Contents"]] == ["k y"]
    signed_s3.delete_object(Bucket="sig-bucket", Key="k y")


def test_wrong_or_missing_credentials(signed_server: ServerProcess) -> None:
    wrong = client_for(signed_server.port, secret="not-the-secret")
    with pytest.raises(ClientError) as info:
        wrong.put_object(Bucket="sig-bucket", Key="x", Body=b"x")
    assert code_of(info.value) == (403, "SignatureDoesNotMatch")
    unknown = client_for(signed_server.port, access="AKIDUNKNOWN")
    with pytest.raises(ClientError) as info:
        unknown.list_buckets()
    assert code_of(info.value) == (403, "InvalidAccessKeyId")
    raw = signed_server.client
    resp = raw.request("PUT", "/sig-bucket/x", b"x")
    assert (resp.status, s3_error(resp).code) == (403, "AccessDenied")
    assert raw.request("HEAD", "/sig-bucket/x").status == 403
    assert client_for(signed_server.port).list_objects_v2(Bucket="sig-bucket")["KeyCount"] == 0


def test_clock_skew(signed_server: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    old = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=10)
    headers = sign(
        signed_server.port, "GET", "/sig-bucket?list-type=2", {}, when=old, monkeypatch=monkeypatch
    )
    resp = signed_server.client.request("GET", "/sig-bucket?list-type=2", headers=headers)
    assert (resp.status, s3_error(resp).code) == (403, "RequestTimeTooSkewed")
    recent = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=2)
    headers = sign(
        signed_server.port,
        "GET",
        "/sig-bucket?list-type=2",
        {},
        when=recent,
        monkeypatch=monkeypatch,
    )
    assert (
        signed_server.client.request("GET", "/sig-bucket?list-type=2", headers=headers).status
        == 200
    )


@pytest.mark.parametrize("version", ["default", "s3v4"])
def test_presigned_urls_with_plain_urllib(signed_server: ServerProcess, version: str) -> None:
    cfg = {} if version == "default" else {"signature_version": "s3v4"}
    signed_s3 = client_for(signed_server.port, **cfg)
    put_url = signed_s3.generate_presigned_url(
        "put_object", Params={"Bucket": "sig-bucket", "Key": "pre signed/ü"}, ExpiresIn=300
    )
    req = urllib.request.Request(put_url, data=b"via presigned put", method="PUT")
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200
    get_url = signed_s3.generate_presigned_url(
        "get_object", Params={"Bucket": "sig-bucket", "Key": "pre signed/ü"}, ExpiresIn=300
    )
    with urllib.request.urlopen(get_url, timeout=30) as resp:
        assert resp.read() == b"via presigned put"
    tampered = get_url.replace("pre%20signed", "other")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(tampered, timeout=30)
    assert info.value.code == 403
    wrong = client_for(signed_server.port, secret="bad", **cfg).generate_presigned_url(
        "get_object", Params={"Bucket": "sig-bucket", "Key": "pre signed/ü"}, ExpiresIn=300
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(wrong, timeout=30)
    assert info.value.code == 403 and b"SignatureDoesNotMatch" in info.value.read()


def test_expired_presigned_url(
    signed_server: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=3)
    v2 = client_for(signed_server.port).generate_presigned_url(
        "get_object", Params={"Bucket": "sig-bucket", "Key": "x"}, ExpiresIn=-5
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(v2, timeout=30)
    assert info.value.code == 403 and b"<Code>AccessDenied</Code>" in info.value.read()

    class Fixed(datetime.datetime):
        @classmethod
        def utcnow(cls) -> datetime.datetime:
            return past.replace(tzinfo=None)

        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return past if tz else past.replace(tzinfo=None)

    with monkeypatch.context() as patch:
        patch.setattr("botocore.auth.datetime.datetime", Fixed)
        url = client_for(signed_server.port, signature_version="s3v4").generate_presigned_url(
            "get_object", Params={"Bucket": "sig-bucket", "Key": "x"}, ExpiresIn=60
        )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(url, timeout=30)
    assert info.value.code == 403
    assert b"<Code>AccessDenied</Code>" in info.value.read()


def _streaming_headers(
    port: int,
    path: str,
    data_len: int,
    raw_len: int,
    monkeypatch: pytest.MonkeyPatch,
    trailer: str | None = None,
) -> tuple[dict[str, str], Signed]:
    content_sha = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" + ("-TRAILER" if trailer else "")
    headers = {
        "x-amz-content-sha256": content_sha,
        "x-amz-decoded-content-length": str(data_len),
        "content-encoding": "aws-chunked",
        "content-length": str(raw_len),
    }
    if trailer:
        headers["x-amz-trailer"] = trailer
    signed = sign(port, "PUT", path, dict(headers), monkeypatch=monkeypatch)
    amz_date = signed["X-Amz-Date"]
    seed = signed["Authorization"].rsplit("Signature=", 1)[1]
    signer = Signed(
        ACCESS_KEY,
        signing_key(SECRET_KEY, amz_date[:8], "us-east-1", "s3"),
        amz_date,
        f"{amz_date[:8]}/us-east-1/s3/aws4_request",
        seed,
        False,
    )
    return signed, signer


def _chunked_length(data: bytes, chunk: int, signed: bool, trailer: tuple[str, str] | None) -> int:
    dummy = Signed("A", b"k", "20000101T000000Z", "s", "0" * 64, False) if signed else None
    return len(encode_chunked(data, chunk, signer=dummy, trailer=trailer))


@pytest.mark.parametrize("with_trailer", [False, True])
def test_streaming_signed_upload(
    signed_server: ServerProcess, monkeypatch: pytest.MonkeyPatch, with_trailer: bool
) -> None:
    data = bytes(range(256)) * 500
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    trailer = ("x-amz-checksum-crc32", crc) if with_trailer else None
    path = f"/sig-bucket/streamed-{with_trailer}"
    raw_len = _chunked_length(data, 65536, True, trailer)
    headers, signer = _streaming_headers(
        signed_server.port,
        path,
        len(data),
        raw_len,
        monkeypatch,
        "x-amz-checksum-crc32" if with_trailer else None,
    )
    body = encode_chunked(data, 65536, signer=signer, trailer=trailer)
    client = signed_server.client
    resp = client.request("PUT", path, body, headers)
    assert resp.status == 200, resp
    got = client_for(signed_server.port).get_object(Bucket="sig-bucket", Key=path.split("/")[-1])
    assert got["Body"].read() == data
    # one flipped byte of data: the chunk signature no longer matches, nothing is committed
    bad_path = path + "-bad"
    headers, signer = _streaming_headers(
        signed_server.port,
        bad_path,
        len(data),
        raw_len,
        monkeypatch,
        "x-amz-checksum-crc32" if with_trailer else None,
    )
    good = encode_chunked(data, 65536, signer=signer, trailer=trailer)
    index = good.index(b"\r\n") + 100
    bad = good[:index] + bytes([good[index] ^ 1]) + good[index + 1 :]
    resp = client.request("PUT", bad_path, bad, headers)
    assert (resp.status, s3_error(resp).code) == (403, "SignatureDoesNotMatch")
    assert (
        client_for(signed_server.port).list_objects_v2(
            Bucket="sig-bucket", Prefix=bad_path.split("/")[-1]
        )["KeyCount"]
        == 0
    )


def test_unsigned_trailer_chunked_upload(raw: Client, bucket: str) -> None:
    data = b"chunky data " * 10000
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    headers = {
        "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        "content-encoding": "aws-chunked",
        "x-amz-decoded-content-length": str(len(data)),
        "x-amz-trailer": "x-amz-checksum-crc32",
        "content-type": "text/plain",
    }
    body = encode_chunked(data, 16384, trailer=("x-amz-checksum-crc32", crc))
    resp = raw.request("PUT", f"/{bucket}/ok", body, headers)
    assert resp.status == 200, resp
    assert resp.headers["x-amz-checksum-crc32"] == crc
    got = raw.request("GET", f"/{bucket}/ok", headers={"x-amz-checksum-mode": "ENABLED"})
    assert got.body == data and got.headers["x-amz-checksum-crc32"] == crc
    assert "content-encoding" not in got.headers  # aws-chunked is not the object's encoding
    bad = encode_chunked(data, 16384, trailer=("x-amz-checksum-crc32", "AAAAAA=="))
    resp = raw.request("PUT", f"/{bucket}/bad", bad, headers)
    assert (resp.status, s3_error(resp).code) == (400, "BadDigest")
    missing = encode_chunked(data, 16384)
    resp = raw.request("PUT", f"/{bucket}/bad", missing, headers)
    assert (resp.status, s3_error(resp).code) == (400, "InvalidRequest")
    truncated = body[: len(body) // 2]
    resp = raw.request("PUT", f"/{bucket}/bad", truncated, headers)
    assert (resp.status, s3_error(resp).code) == (400, "IncompleteBody")
    no_length = dict(headers)
    del no_length["x-amz-decoded-content-length"]
    resp = raw.request("PUT", f"/{bucket}/bad", body, no_length)
    assert (resp.status, s3_error(resp).code) == (411, "MissingContentLength")
    assert raw.request("HEAD", f"/{bucket}/bad").status == 404
