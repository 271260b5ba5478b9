"""Unit tests of the S3 gateway's pieces: XML, names, checksums, aws-chunked, SigV4."""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import os
import zlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from amberio.errors import IncompleteBody, NotFound, QuorumNotReached, RangeNotSatisfiable
from amberio.http.messages import Request
from amberio.http.s3 import meta, names, xml
from amberio.http.s3.auth import Signed, Verifier, signing_key
from amberio.http.s3.chunked import AwsChunkedDecoder
from amberio.http.s3.errors import STATUS, S3Error, from_amberio
from amberio.http.s3.list import decode_token, encode_token

# ---- XML ------------------------------------------------------------------------------------


def test_xml_output_escapes_and_refs_control_characters() -> None:
    root = xml.element("ListBucketResult")
    xml.sub(root, "Key", 'a<b>&"c\x01d\re')
    out = xml.to_bytes(root)
    assert out.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult xmlns=')
    assert b'a&lt;b&gt;&amp;"c&#x1;d&#xD;e' in out


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"   ",
        b"<Delete><Object><Key>a</Key></Object>",
        b"not xml at all",
        b"\xff\xfe<\x00D\x00",
        b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>'
        b"<Delete>&b;</Delete>",
        b'<!DOCTYPE Delete SYSTEM "file:///etc/passwd"><Delete/>',
        b"<!doctype Delete><Delete/>",
        b"<Other/>",
    ],
)
def test_xml_parse_refuses_malformed_and_dtds(body: bytes) -> None:
    with pytest.raises(S3Error) as info:
        xml.parse(body, "Delete")
    assert info.value.s3_code == "MalformedXML"
    assert info.value.status == 400


def test_xml_parse_ignores_namespace() -> None:
    root = xml.parse(
        b'<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Quiet>true</Quiet></Delete>',
        "Delete",
    )
    assert xml.child_text(root, "Quiet") == "true"
    assert xml.child_text(root, "Missing") is None
    with pytest.raises(S3Error):
        xml.child_text(xml.parse(b"<Delete><Quiet/><Quiet/></Delete>", "Delete"), "Quiet")


# ---- errors ---------------------------------------------------------------------------------


def test_error_table() -> None:
    assert STATUS["NoSuchKey"] == 404
    assert STATUS["NotImplemented"] == 501
    assert STATUS["InvalidRange"] == 416
    assert STATUS["BucketNotEmpty"] == 409
    with pytest.raises(ValueError):
        S3Error("NoSuchThing", "x")
    assert from_amberio(NotFound("x")).s3_code == "NoSuchKey"
    assert from_amberio(QuorumNotReached("x")).status == 503
    assert from_amberio(IncompleteBody("x")).s3_code == "IncompleteBody"
    err = from_amberio(RangeNotSatisfiable("x", 10))
    assert (err.status, err.headers) == (416, [("content-range", "bytes */10")])


# ---- names ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "ab",
        "a" * 64,
        "Upper",
        "under_score",
        "-lead",
        "trail-",
        "a..b",
        "a.-b",
        "192.168.1.1",
        "xn--abc",
        "bucket-s3alias",
        ".amberio-s3",
        "a b",
        "é" * 3,
    ],
)
def test_invalid_bucket_names(name: str) -> None:
    with pytest.raises(S3Error) as info:
        names.check_bucket(name)
    assert info.value.s3_code == "InvalidBucketName"


@pytest.mark.parametrize("name", ["abc", "a" * 63, "my.bucket-1", "1bucket", "a-b.c"])
def test_valid_bucket_names(name: str) -> None:
    assert names.check_bucket(name) == name


def test_keys() -> None:
    for key in ["/lead", "a//b", "./x/../y", "ctl\x01\x7f", "é" * 512, "x" * 1024]:
        assert names.check_key(key) == key
    for key, code in [
        ("x" * 1025, "KeyTooLongError"),
        ("é" * 513, "KeyTooLongError"),
        ("a\x00b", "InvalidArgument"),
        ("bad\ufffd", "InvalidURI"),
    ]:
        with pytest.raises(S3Error) as info:
            names.check_key(key)
        assert info.value.s3_code == code


def test_skip_past_orders_after_every_key_with_the_prefix() -> None:
    prefix = "b/dir/"
    after = prefix + names.SKIP_PAST
    for key in ["b/dir/a", "b/dir/\U0010ffff" * 3, "b/dir/" + "\U0010ffff" * 300, "b/dir/zzz"]:
        assert key < after
        assert key.encode() < after.encode()
    for key in ["b/dir0", "b/dis", "b/e"]:
        assert key > after


# ---- listing tokens and metadata helpers ----------------------------------------------------


def test_continuation_tokens_round_trip_and_garbage_is_refused() -> None:
    assert decode_token(encode_token("k", "a/é\x01")) == ("k", "a/é\x01")
    for garbage in ["***", "", "abc", base64.urlsafe_b64encode(b"v2\x00kx").decode()]:
        with pytest.raises(S3Error) as info:
            decode_token(garbage)
        assert info.value.s3_code == "InvalidArgument"


def test_etag_matching() -> None:
    assert meta.etag_matches('"abc"', "abc")
    assert meta.etag_matches('W/"abc", "def"', "def")
    assert meta.etag_matches("*", "x")
    assert not meta.etag_matches('"abd"', "abc")


# ---- aws-chunked ----------------------------------------------------------------------------

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
SIGNER = Signed(
    "AKIAIOSFODNN7EXAMPLE",
    signing_key(SECRET, "20130524", "us-east-1", "s3"),
    "20130524T000000Z",
    "20130524/us-east-1/s3/aws4_request",
    "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9",
    False,
)


def test_chunk_signatures_match_the_aws_documentation_example() -> None:
    first = SIGNER.chunk(SIGNER.seed, hashlib.sha256(b"a" * 65536).hexdigest())
    assert first == "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648"
    second = SIGNER.chunk(first, hashlib.sha256(b"a" * 1024).hexdigest())
    assert second == "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497"
    last = SIGNER.chunk(second, hashlib.sha256(b"").hexdigest())
    assert last == "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"


def encode_chunked(
    data: bytes,
    chunk: int,
    *,
    signer: Signed | None = None,
    trailer: tuple[str, str] | None = None,
) -> bytes:
    out = bytearray()
    previous = signer.seed if signer else ""
    pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)] + [b""]
    for piece in pieces:
        ext = ""
        if signer is not None:
            previous = signer.chunk(previous, hashlib.sha256(piece).hexdigest())
            ext = f";chunk-signature={previous}"
        out += f"{len(piece):x}{ext}\r\n".encode() + piece
        if piece:
            out += b"\r\n"
    if trailer is not None:
        line = f"{trailer[0]}:{trailer[1]}"
        out += line.encode() + b"\r\n"
        if signer is not None:
            sig = signer.trailer(previous, hashlib.sha256((line + "\n").encode()).hexdigest())
            out += f"x-amz-trailer-signature:{sig}\r\n".encode()
        out += b"\r\n"
    else:
        out += b"\r\n"
    return bytes(out)


async def _feed(raw: bytes, step: int) -> AsyncIterator[bytes]:
    for i in range(0, len(raw), step):
        yield raw[i : i + step]


def decode(raw: bytes, size: int, *, step: int = 1000, signer: Signed | None = None) -> Any:
    decoder = AwsChunkedDecoder(
        _feed(raw, step), decoded_length=size, signer=signer, require_signatures=signer is not None
    )

    async def run() -> bytes:
        return b"".join([piece async for piece in decoder])

    return asyncio.run(run()), decoder.trailers


@pytest.mark.parametrize("step", [1, 7, 65536, 1 << 20])
def test_chunked_unsigned_with_trailer(step: int) -> None:
    data = os.urandom(70_000)
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    raw = encode_chunked(data, 8192, trailer=("x-amz-checksum-crc32", crc))
    out, trailers = decode(raw, len(data), step=step)
    assert out == data
    assert trailers == {"x-amz-checksum-crc32": crc}


@pytest.mark.parametrize("step", [3, 4096, 1 << 20])
def test_chunked_signed_with_and_without_trailer(step: int) -> None:
    data = b"a" * 66560
    out, _ = decode(encode_chunked(data, 65536, signer=SIGNER), len(data), step=step, signer=SIGNER)
    assert out == data
    raw = encode_chunked(data, 65536, signer=SIGNER, trailer=("x-amz-checksum-crc32c", "AAAAAA=="))
    out, trailers = decode(raw, len(data), step=step, signer=SIGNER)
    assert out == data and trailers == {"x-amz-checksum-crc32c": "AAAAAA=="}


@pytest.mark.parametrize(
    ("mangle", "code"),
    [
        (
            lambda raw: raw.replace(b"chunk-signature=ad", b"chunk-signature=00", 1),
            "SignatureDoesNotMatch",
        ),
        (lambda raw: raw.replace(b"a" * 10, b"b" * 10, 1), "SignatureDoesNotMatch"),
        (lambda raw: raw[:-40], "IncompleteBody"),
        (lambda raw: raw[:100], "IncompleteBody"),
        (lambda raw: b"zz\r\n" + raw, "InvalidRequest"),
        (lambda raw: raw + b"extra", "InvalidRequest"),
        (lambda raw: raw.replace(b"\r\n", b"\n", 1), "InvalidRequest"),
        (lambda raw: raw.replace(b";chunk-signature=", b";other=", 1), "SignatureDoesNotMatch"),
    ],
)
def test_chunked_bad_bodies(mangle: Any, code: str) -> None:
    data = b"a" * 66560
    raw = mangle(encode_chunked(data, 65536, signer=SIGNER))
    with pytest.raises(S3Error) as info:
        decode(raw, len(data), signer=SIGNER)
    assert info.value.s3_code == code


def test_chunked_declared_length_must_match() -> None:
    data = b"x" * 100
    with pytest.raises(S3Error) as info:
        decode(encode_chunked(data, 30), 99)
    assert info.value.s3_code == "InvalidRequest"
    with pytest.raises(S3Error) as info:
        decode(encode_chunked(data, 30), 101)
    assert info.value.s3_code == "IncompleteBody"


def test_chunked_bad_trailer_signature() -> None:
    data = b"a" * 1000
    raw = encode_chunked(data, 512, signer=SIGNER, trailer=("x-amz-checksum-crc32", "AAAAAA=="))
    bad = raw.replace(b"x-amz-checksum-crc32:AAAAAA==", b"x-amz-checksum-crc32:AAAAAB==")
    with pytest.raises(S3Error) as info:
        decode(bad, len(data), signer=SIGNER)
    assert info.value.s3_code == "SignatureDoesNotMatch"


# ---- SigV4 against botocore's own signer ----------------------------------------------------


class _Headers:
    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.pairs = [(k.lower(), v) for k, v in pairs]

    def get(self, key: str, default: Any = None) -> Any:
        for k, v in self.pairs:
            if k == key.lower():
                return v
        return default

    def items(self) -> list[tuple[str, str]]:
        return list(self.pairs)


class _Scope:
    def __init__(self, method: str, path: str, query: str, headers: list[tuple[str, str]]) -> None:
        self.method = method
        self.path = path
        self.query_string = query
        self.headers = _Headers(headers)
        self.client = "127.0.0.1:1"


def _request_from(aws: AWSRequest) -> Request:
    import urllib.parse

    parts = urllib.parse.urlsplit(aws.url)
    headers = [(k, v.decode() if isinstance(v, bytes) else v) for k, v in aws.headers.items()]
    headers.append(("host", parts.netloc))
    scope = _Scope(aws.method, urllib.parse.unquote(parts.path), parts.query, headers)
    return Request(scope, None)  # type: ignore[arg-type]


NOW = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
CREDS = Credentials("AKIDTEST", "secret/key+xyz")


def _signed(method: str, url: str, headers: dict[str, str] | None = None) -> AWSRequest:
    aws = AWSRequest(method=method, url=url, headers=headers or {}, data=b"")
    aws.context["timestamp"] = NOW.strftime("%Y%m%dT%H%M%SZ")
    auth = S3SigV4Auth(CREDS, "s3", "us-east-1")
    auth._timestamp = NOW.strftime("%Y%m%dT%H%M%SZ")  # type: ignore[attr-defined]
    auth.add_auth(aws)
    return aws


def _fixed_now(monkeypatch: pytest.MonkeyPatch) -> None:
    class FixedDatetime(datetime.datetime):
        @classmethod
        def utcnow(cls) -> datetime.datetime:  # botocore asks for utcnow()
            return NOW.replace(tzinfo=None)

        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return NOW if tz else NOW.replace(tzinfo=None)

    monkeypatch.setattr("botocore.auth.datetime.datetime", FixedDatetime)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9000/bkt/a%20b%2Bc/%C3%A9~x",
        "http://127.0.0.1:9000/bkt?list-type=2&prefix=a%20b&max-keys=2",
        "http://127.0.0.1:9000/bkt?uploads",
        "http://127.0.0.1:9000/",
    ],
)
def test_header_signature_verifies(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _fixed_now(monkeypatch)
    aws = _signed("GET", url, {"x-amz-meta-a": "  b   c "})
    verifier = Verifier({"AKIDTEST": "secret/key+xyz"})
    signed = verifier.verify(_request_from(aws), now=NOW)
    assert signed.access_key_id == "AKIDTEST"
    # wrong secret, other key, skew
    with pytest.raises(S3Error) as info:
        Verifier({"AKIDTEST": "other"}).verify(_request_from(aws), now=NOW)
    assert info.value.s3_code == "SignatureDoesNotMatch"
    with pytest.raises(S3Error) as info:
        Verifier({"OTHER": "x"}).verify(_request_from(aws), now=NOW)
    assert info.value.s3_code == "InvalidAccessKeyId"
    with pytest.raises(S3Error) as info:
        verifier.verify(_request_from(aws), now=NOW + datetime.timedelta(minutes=6))
    assert info.value.s3_code == "RequestTimeTooSkewed"


def test_presigned_url_verifies_and_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    _fixed_now(monkeypatch)
    aws = AWSRequest(method="GET", url="http://127.0.0.1:9000/bkt/some%20key", headers={})
    S3SigV4QueryAuth(CREDS, "s3", "us-east-1", expires=60).add_auth(aws)
    verifier = Verifier({"AKIDTEST": "secret/key+xyz"})
    assert verifier.verify(_request_from(aws), now=NOW).presigned
    with pytest.raises(S3Error) as info:
        verifier.verify(_request_from(aws), now=NOW + datetime.timedelta(seconds=61))
    assert (info.value.s3_code, info.value.message) == ("AccessDenied", "Request has expired")
    tampered = AWSRequest(method="GET", url=aws.url.replace("some%20key", "other"), headers={})
    with pytest.raises(S3Error) as info:
        verifier.verify(_request_from(tampered), now=NOW)
    assert info.value.s3_code == "SignatureDoesNotMatch"


def test_sigv2_header_and_query(monkeypatch: pytest.MonkeyPatch) -> None:
    from botocore.auth import HmacV1Auth, HmacV1QueryAuth

    verifier = Verifier({"AKIDTEST": "secret/key+xyz"})
    url = "http://127.0.0.1:9000/bkt/a%20b?uploadId=abc&partNumber=2&other=1"
    aws = AWSRequest(
        method="PUT", url=url, headers={"Content-Type": "text/plain", "x-amz-meta-a": "b"}
    )
    HmacV1Auth(CREDS).add_auth(aws)
    now = datetime.datetime.now(datetime.UTC)
    assert not verifier.verify(_request_from(aws), now=now).presigned
    with pytest.raises(S3Error) as info:
        Verifier({"AKIDTEST": "x"}).verify(_request_from(aws), now=now)
    assert info.value.s3_code == "SignatureDoesNotMatch"
    with pytest.raises(S3Error) as info:
        verifier.verify(_request_from(aws), now=now + datetime.timedelta(minutes=10))
    assert info.value.s3_code == "RequestTimeTooSkewed"
    query = AWSRequest(method="GET", url="http://127.0.0.1:9000/bkt/k%2Bx", headers={})
    HmacV1QueryAuth(CREDS, expires=60).add_auth(query)
    assert verifier.verify(_request_from(query), now=now).presigned
    with pytest.raises(S3Error) as info:
        verifier.verify(_request_from(query), now=now + datetime.timedelta(seconds=120))
    assert (info.value.s3_code, info.value.message) == ("AccessDenied", "Request has expired")


def test_unsigned_and_malformed_auth_are_refused() -> None:
    verifier = Verifier({"AKIDTEST": "x"})

    def req(headers: list[tuple[str, str]], query: str = "") -> Request:
        return Request(_Scope("GET", "/bkt/k", query, headers), None)  # type: ignore[arg-type]

    cases = [
        (req([]), "AccessDenied"),
        (req([("authorization", "AWS AKIDTEST:sig")]), "AccessDenied"),
        (req([("authorization", "AWS nocolon")]), "AuthorizationHeaderMalformed"),
        (req([], "AWSAccessKeyId=AKIDTEST&Signature=x"), "AuthorizationQueryParametersError"),
        (req([("authorization", "AWS4-HMAC-SHA256 Credential=x")]), "AuthorizationHeaderMalformed"),
        (req([], "X-Amz-Algorithm=AWS4-HMAC-SHA256"), "AuthorizationQueryParametersError"),
        (req([], "X-Amz-Algorithm=HMAC"), "AuthorizationQueryParametersError"),
        (req([("authorization", "AWS4-HMAC-SHA256 a=b")], "X-Amz-Algorithm=x"), "InvalidArgument"),
    ]
    for request, code in cases:
        with pytest.raises(S3Error) as info:
            verifier.verify(request, now=NOW)
        assert info.value.s3_code == code, request.headers.items()


# ---- long-running answers (CompleteMultipartUpload, CopyObject) ---------------------------


class _Transport:
    def __init__(self, sink: list[bytes]) -> None:
        self.sink = sink

    async def send_bytes(self, data: bytes) -> None:
        self.sink.append(data)


class _Proto:
    def __init__(self) -> None:
        self.status: int | None = None
        self.headers: list[tuple[str, str]] = []
        self.chunks: list[bytes] = []

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status, self.headers = status, headers
        self.chunks.append(body)

    def response_empty(self, status: int, headers: list[tuple[str, str]]) -> None:
        self.status, self.headers = status, headers

    def response_stream(self, status: int, headers: list[tuple[str, str]]) -> _Transport:
        self.status, self.headers = status, headers
        return _Transport(self.chunks)


def _context(proto: _Proto) -> Any:
    from amberio.http.s3.context import Context, Gateway

    req = Request(_Scope("POST", "/bkt/key", "uploadId=x", []), proto)  # type: ignore[arg-type]
    return Context(None, req, Gateway(Verifier({})), "REQID")  # type: ignore[arg-type]


@pytest.mark.parametrize("fails", [False, True])
def test_long_running_answer_keeps_the_connection_alive(
    monkeypatch: pytest.MonkeyPatch, fails: bool
) -> None:
    import xml.etree.ElementTree as ET

    from amberio.http.s3 import longrun

    monkeypatch.setattr(longrun, "FIRST_WAIT", 0.05)
    monkeypatch.setattr(longrun, "KEEPALIVE_EVERY", 0.05)
    proto = _Proto()

    async def work() -> Any:
        await asyncio.sleep(0.3)
        if fails:
            raise S3Error("InvalidPart", "part 2 is gone")
        root = xml.element("CompleteMultipartUploadResult")
        xml.sub(root, "ETag", '"abc-2"')
        return root

    asyncio.run(longrun.respond(_context(proto), work()))
    assert proto.status == 200
    body = b"".join(proto.chunks)
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n ')  # keep-alive spaces
    root = ET.fromstring(body)
    if fails:
        assert root.tag == "Error" and root.find("Code").text == "InvalidPart"  # type: ignore[union-attr]
    else:
        assert root.tag.endswith("CompleteMultipartUploadResult")


def test_quick_long_running_answer_is_a_plain_answer() -> None:
    from amberio.http.s3 import longrun

    proto = _Proto()

    async def work() -> Any:
        return xml.element("CopyObjectResult")

    asyncio.run(longrun.respond(_context(proto), work()))
    assert proto.status == 200 and len(proto.chunks) == 1
    assert ("x-amz-request-id", "REQID") in proto.headers

    failing = _Proto()

    async def broken() -> Any:
        raise S3Error("NoSuchKey", "gone")

    with pytest.raises(S3Error):
        asyncio.run(longrun.respond(_context(failing), broken()))


# ---- reclaiming abandoned multipart uploads -----------------------------------------------


class _FakeStore:
    """Just enough of the coordinator for `uploads.sweep`: blobs with a document."""

    def __init__(self) -> None:
        self.blobs: dict[str, tuple[dict[str, Any], str]] = {}
        self.deleted: list[str] = []

    def add(self, path: str, document: dict[str, Any], updated_at: str) -> None:
        self.blobs[path] = (document, updated_at)

    async def list_blobs(
        self, prefix: str, after: str | None, limit: int, include_deleted: bool
    ) -> list[Any]:
        from amberio.storage.index import IndexEntry

        paths = sorted(
            p for p in self.blobs if p.startswith(prefix) and (after is None or p > after)
        )
        return [
            IndexEntry(
                path=p,
                generation=1,
                etag="e",
                size_bytes=0,
                deleted=False,
                updated_at=self.blobs[p][1],
            )
            for p in paths[:limit]
        ]

    async def plan_read(self, path: str, range_header: str | None) -> Any:
        from types import SimpleNamespace

        if path not in self.blobs:
            raise NotFound(path)
        document, updated_at = self.blobs[path]
        return SimpleNamespace(
            head=SimpleNamespace(document=document), meta=SimpleNamespace(updated_at=updated_at)
        )

    async def delete(self, path: str, *, write_id: str | None) -> None:
        if path not in self.blobs:
            raise NotFound(path)
        del self.blobs[path]
        self.deleted.append(path)


def test_sweep_reclaims_old_uploads_completed_records_and_orphan_parts() -> None:
    from types import SimpleNamespace

    from amberio.http.s3 import uploads as upload_records
    from amberio.http.s3.context import Context, Gateway

    now = datetime.datetime.now(datetime.UTC)

    def stamp(days: float) -> str:
        return (now - datetime.timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    store = _FakeStore()
    uploads = {
        "a" * 32: ("open", 8),
        "b" * 32: ("open", 1),
        "c" * 32: ("completed", 2),
        "d" * 32: ("completed", 0.1),
    }
    for upload_id, (state, age) in uploads.items():
        record = {"s3_upload": {"key": "k", "state": state, "initiated": stamp(age)}}
        store.add(names.upload_record("bkt", upload_id), record, stamp(age))
        store.add(names.part_blob(upload_id, 1), {}, stamp(age))
    store.add(names.part_blob("e" * 32, 1), {}, stamp(3))  # orphan: no record
    store.add(names.part_blob("f" * 32, 1), {}, stamp(0.01))  # young orphan (upload racing)
    ctx = Context(SimpleNamespace(coordinator=store), None, Gateway(Verifier({})), "R")  # type: ignore[arg-type]
    removed = asyncio.run(upload_records.sweep(ctx))
    assert removed == 2
    left = set(store.blobs)
    assert left == {
        names.upload_record("bkt", "b" * 32),
        names.part_blob("b" * 32, 1),
        names.upload_record("bkt", "d" * 32),
        names.part_blob("d" * 32, 1),
        names.part_blob("f" * 32, 1),
    }
