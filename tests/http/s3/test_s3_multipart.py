"""Multipart uploads: the happy path, part rules, bad inputs, restarts, partNumber reads."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.http.conftest import Client, ServerProcess
from tests.http.s3.conftest import client_for, s3_error, texts, xml_doc

MIB = 1024 * 1024


def code_of(exc: ClientError) -> tuple[int, str]:
    return exc.response["ResponseMetadata"]["HTTPStatusCode"], exc.response["Error"]["Code"]


def multipart_etag(parts: list[bytes]) -> str:
    joined = b"".join(hashlib.md5(p).digest() for p in parts)
    return f'"{hashlib.md5(joined).hexdigest()}-{len(parts)}"'


def complete_xml(parts: list[tuple[int, str]]) -> bytes:
    items = "".join(f"<Part><PartNumber>{n}</PartNumber><ETag>{e}</ETag></Part>" for n, e in parts)
    return f"<CompleteMultipartUpload>{items}</CompleteMultipartUpload>".encode()


def test_multipart_round_trip(s3: Any, bucket: str) -> None:
    parts = [os.urandom(5 * MIB), os.urandom(5 * MIB + 3), os.urandom(1234)]
    created = s3.create_multipart_upload(
        Bucket=bucket, Key="big/obj", ContentType="video/x-test", Metadata={"k": "v"}
    )
    upload_id = created["UploadId"]
    etags = []
    for number, data in enumerate(parts, start=1):
        etags.append(
            s3.upload_part(
                Bucket=bucket, Key="big/obj", UploadId=upload_id, PartNumber=number, Body=data
            )["ETag"]
        )
    listed = s3.list_parts(Bucket=bucket, Key="big/obj", UploadId=upload_id)
    assert [p["PartNumber"] for p in listed["Parts"]] == [1, 2, 3]
    assert [p["Size"] for p in listed["Parts"]] == [len(p) for p in parts]
    uploads = s3.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert [(u["Key"], u["UploadId"]) for u in uploads] == [("big/obj", upload_id)]
    done = s3.complete_multipart_upload(
        Bucket=bucket,
        Key="big/obj",
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": i + 1, "ETag": e} for i, e in enumerate(etags)]},
    )
    whole = b"".join(parts)
    assert done["ETag"] == multipart_etag(parts)
    got = s3.get_object(Bucket=bucket, Key="big/obj")
    assert got["Body"].read() == whole
    assert got["ETag"] == done["ETag"]
    assert got["ContentType"] == "video/x-test" and got["Metadata"] == {"k": "v"}
    listed_objects = s3.list_objects_v2(Bucket=bucket)["Contents"]
    assert [(o["Key"], o["ETag"], o["Size"]) for o in listed_objects] == [
        ("big/obj", done["ETag"], len(whole))
    ]
    # ranges across part boundaries, partNumber reads
    edge = 5 * MIB
    ranged = s3.get_object(Bucket=bucket, Key="big/obj", Range=f"bytes={edge - 10}-{edge + 10}")
    assert ranged["Body"].read() == whole[edge - 10 : edge + 11]
    second = s3.get_object(Bucket=bucket, Key="big/obj", PartNumber=2)
    assert second["Body"].read() == parts[1]
    assert second["PartsCount"] == 3
    assert second["ContentRange"] == f"bytes {edge}-{2 * edge + 2}/{len(whole)}"
    head = s3.head_object(Bucket=bucket, Key="big/obj", PartNumber=3)
    assert head["ContentLength"] == 1234 and head["PartsCount"] == 3
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket=bucket, Key="big/obj", PartNumber=4)
    assert code_of(info.value) == (416, "InvalidPartNumber")
    # the upload is gone; a retried Complete gets the same answer
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    again = s3.complete_multipart_upload(
        Bucket=bucket,
        Key="big/obj",
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": i + 1, "ETag": e} for i, e in enumerate(etags)]},
    )
    assert again["ETag"] == done["ETag"]
    with pytest.raises(ClientError) as info:
        s3.upload_part(Bucket=bucket, Key="big/obj", UploadId=upload_id, PartNumber=4, Body=b"x")
    assert code_of(info.value) == (404, "NoSuchUpload")


def test_complete_validates_the_part_list(s3: Any, raw: Client, bucket: str) -> None:
    key = "v"
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    small = s3.upload_part(
        Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=b"s" * 1000
    )["ETag"]
    big = s3.upload_part(
        Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=2, Body=b"b" * (5 * MIB)
    )["ETag"]
    t = f"/{bucket}/{key}?uploadId={upload_id}"

    def complete(body: bytes) -> tuple[int, str]:
        resp = raw.request("POST", t, body)
        return resp.status, s3_error(resp).code

    assert complete(complete_xml([(1, small), (2, big)])) == (400, "EntityTooSmall")
    assert complete(complete_xml([(2, big), (1, small)])) == (400, "InvalidPartOrder")
    assert complete(complete_xml([(1, small), (1, small)])) == (400, "InvalidPartOrder")
    assert complete(complete_xml([(2, big), (3, big)])) == (400, "InvalidPart")
    assert complete(complete_xml([(2, '"0123456789abcdef0123456789abcdef"')])) == (
        400,
        "InvalidPart",
    )
    assert complete(complete_xml([(0, big)])) == (400, "InvalidArgument")
    assert complete(complete_xml([(10001, big)])) == (400, "InvalidArgument")
    assert complete(b"<CompleteMultipartUpload></CompleteMultipartUpload>") == (400, "MalformedXML")
    assert complete(b"<CompleteMultipartUpload><Part><PartNumber>1") == (400, "MalformedXML")
    assert complete(
        b"<CompleteMultipartUpload><Part><ETag>x</ETag></Part></CompleteMultipartUpload>"
    ) == (400, "MalformedXML")
    bomb = (
        b'<!DOCTYPE c [<!ENTITY a "aaaaaaaaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
        b"<CompleteMultipartUpload><Part><PartNumber>2</PartNumber><ETag>&b;</ETag></Part>"
        b"</CompleteMultipartUpload>"
    )
    assert complete(bomb) == (400, "MalformedXML")
    external = (
        b'<!DOCTYPE c [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b"<CompleteMultipartUpload><Part><PartNumber>2</PartNumber><ETag>&x;</ETag>"
        b"</Part></CompleteMultipartUpload>"
    )
    assert complete(external) == (400, "MalformedXML")
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key=key)  # nothing committed
    # the last part may be small
    ok = raw.request("POST", t, complete_xml([(2, big)]))
    assert ok.status == 200, ok
    assert texts(xml_doc(ok), "ETag") == [multipart_etag([b"b" * (5 * MIB)])]


def test_upload_part_bad_inputs(s3: Any, raw: Client, bucket: str) -> None:
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    for number in ("0", "10001", "abc", ""):
        resp = raw.request("PUT", f"/{bucket}/k?partNumber={number}&uploadId={upload_id}", b"x")
        assert (resp.status, s3_error(resp).code) == (400, "InvalidArgument"), number
    for bad_id in ("nope", "0" * 32, upload_id.upper()):
        resp = raw.request("PUT", f"/{bucket}/k?partNumber=1&uploadId={bad_id}", b"x")
        assert (resp.status, s3_error(resp).code) == (404, "NoSuchUpload"), bad_id
    other_key = raw.request("PUT", f"/{bucket}/other?partNumber=1&uploadId={upload_id}", b"x")
    assert other_key.status == 404
    half = raw.request("PUT", f"/{bucket}/k?partNumber=1", b"x")
    assert (half.status, s3_error(half).code) == (400, "InvalidRequest")
    bad_md5 = raw.request(
        "PUT",
        f"/{bucket}/k?partNumber=1&uploadId={upload_id}",
        b"x",
        {"Content-MD5": "AAAAAAAAAAAAAAAAAAAAAA=="},
    )
    assert (bad_md5.status, s3_error(bad_md5).code) == (400, "BadDigest")
    assert s3.list_parts(Bucket=bucket, Key="k", UploadId=upload_id).get("Parts", []) == []


def test_abort(s3: Any, bucket: str) -> None:
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=1, Body=b"x")
    s3.abort_multipart_upload(Bucket=bucket, Key="k", UploadId=upload_id)
    with pytest.raises(ClientError) as info:
        s3.list_parts(Bucket=bucket, Key="k", UploadId=upload_id)
    assert code_of(info.value) == (404, "NoSuchUpload")
    with pytest.raises(ClientError) as info:
        s3.abort_multipart_upload(Bucket=bucket, Key="k", UploadId=upload_id)
    assert code_of(info.value) == (404, "NoSuchUpload")


def test_list_uploads_and_parts_paging(s3: Any, bucket: str) -> None:
    ids = {}
    for key in ("a/1", "a/2", "b", "c/d/e"):
        ids[key] = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    for n in range(1, 6):
        s3.upload_part(Bucket=bucket, Key="b", UploadId=ids["b"], PartNumber=n, Body=b"p")
    page = s3.list_multipart_uploads(Bucket=bucket, Delimiter="/")
    assert [u["Key"] for u in page["Uploads"]] == ["b"]
    assert [p["Prefix"] for p in page["CommonPrefixes"]] == ["a/", "c/"]
    page = s3.list_multipart_uploads(Bucket=bucket, MaxUploads=2)
    assert [u["Key"] for u in page["Uploads"]] == ["a/1", "a/2"] and page["IsTruncated"]
    rest = s3.list_multipart_uploads(
        Bucket=bucket, KeyMarker=page["NextKeyMarker"], UploadIdMarker=page["NextUploadIdMarker"]
    )
    assert [u["Key"] for u in rest["Uploads"]] == ["b", "c/d/e"]
    parts = s3.list_parts(Bucket=bucket, Key="b", UploadId=ids["b"], MaxParts=2)
    assert [p["PartNumber"] for p in parts["Parts"]] == [1, 2] and parts["IsTruncated"]
    parts = s3.list_parts(
        Bucket=bucket, Key="b", UploadId=ids["b"], PartNumberMarker=parts["NextPartNumberMarker"]
    )
    assert [p["PartNumber"] for p in parts["Parts"]] == [3, 4, 5]


def test_checksummed_multipart_upload(s3: Any, bucket: str) -> None:
    created = s3.create_multipart_upload(Bucket=bucket, Key="ck", ChecksumAlgorithm="SHA256")
    upload_id = created["UploadId"]
    parts = [b"1" * (5 * MIB), b"22"]
    answers = [
        s3.upload_part(
            Bucket=bucket,
            Key="ck",
            UploadId=upload_id,
            PartNumber=i + 1,
            Body=data,
            ChecksumAlgorithm="SHA256",
        )
        for i, data in enumerate(parts)
    ]
    done = s3.complete_multipart_upload(
        Bucket=bucket,
        Key="ck",
        UploadId=upload_id,
        MultipartUpload={
            "Parts": [
                {"PartNumber": i + 1, "ETag": a["ETag"], "ChecksumSHA256": a["ChecksumSHA256"]}
                for i, a in enumerate(answers)
            ]
        },
    )
    digest = hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in parts)).digest()
    import base64

    assert done["ChecksumSHA256"] == f"{base64.b64encode(digest).decode()}-2"
    got = s3.get_object(Bucket=bucket, Key="ck", ChecksumMode="ENABLED")
    assert got["Body"].read() == b"".join(parts)


def test_upload_part_copy(s3: Any, bucket: str) -> None:
    source = os.urandom(6 * MIB)
    s3.put_object(Bucket=bucket, Key="src", Body=source)
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="dst")["UploadId"]
    first = s3.upload_part_copy(
        Bucket=bucket,
        Key="dst",
        UploadId=upload_id,
        PartNumber=1,
        CopySource={"Bucket": bucket, "Key": "src"},
        CopySourceRange=f"bytes=0-{5 * MIB - 1}",
    )
    second = s3.upload_part_copy(
        Bucket=bucket,
        Key="dst",
        UploadId=upload_id,
        PartNumber=2,
        CopySource={"Bucket": bucket, "Key": "src"},
        CopySourceRange=f"bytes={5 * MIB}-{6 * MIB - 1}",
    )
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="dst",
        UploadId=upload_id,
        MultipartUpload={
            "Parts": [
                {"PartNumber": 1, "ETag": first["CopyPartResult"]["ETag"]},
                {"PartNumber": 2, "ETag": second["CopyPartResult"]["ETag"]},
            ]
        },
    )
    assert s3.get_object(Bucket=bucket, Key="dst")["Body"].read() == source
    with pytest.raises(ClientError) as info:
        s3.upload_part_copy(
            Bucket=bucket,
            Key="dst",
            UploadId=upload_id,
            PartNumber=1,
            CopySource={"Bucket": bucket, "Key": "src"},
            CopySourceRange=f"bytes=0-{7 * MIB}",
        )
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] in (404, 416)


def test_uploads_survive_a_restart(fresh_server: ServerProcess) -> None:
    s3 = client_for(fresh_server.port)
    bucket = "restart-bucket"
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    part1 = os.urandom(5 * MIB)
    e1 = s3.upload_part(Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=1, Body=part1)[
        "ETag"
    ]
    fresh_server.restart()
    s3 = client_for(fresh_server.port)
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket)["Uploads"]] == [
        upload_id
    ]
    e2 = s3.upload_part(Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=2, Body=b"end")[
        "ETag"
    ]
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="k",
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]},
    )
    fresh_server.restart()
    s3 = client_for(fresh_server.port)
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == part1 + b"end"
    assert s3.get_object(Bucket=bucket, Key="k", PartNumber=2)["Body"].read() == b"end"


@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C"])
def test_full_object_crc_multipart_upload(
    s3: Any, raw: Client, bucket: str, algorithm: str
) -> None:
    import base64
    import zlib

    from amberio.http.s3.checksums import Crc32c

    def crc(data: bytes) -> str:
        if algorithm == "CRC32":
            return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
        hasher = Crc32c()
        hasher.update(data)
        return base64.b64encode(hasher.digest()).decode()

    parts = [os.urandom(5 * MIB), os.urandom(4321)]
    whole = b"".join(parts)
    for key, claimed, ok in (("full", crc(whole), True), ("wrong", crc(b"other"), False)):
        upload_id = s3.create_multipart_upload(
            Bucket=bucket, Key=key, ChecksumAlgorithm=algorithm, ChecksumType="FULL_OBJECT"
        )["UploadId"]
        answers = []
        for i, part in enumerate(parts):  # raw: boto3 needs awscrt for CRC32C
            resp = raw.request(
                "PUT",
                f"/{bucket}/{key}?partNumber={i + 1}&uploadId={upload_id}",
                part,
                {f"x-amz-checksum-{algorithm.lower()}": crc(part)},
            )
            assert resp.status == 200, resp
            answers.append(
                {
                    "ETag": resp.headers["etag"],
                    f"Checksum{algorithm}": resp.headers[f"x-amz-checksum-{algorithm.lower()}"],
                }
            )
        args: dict[str, Any] = {
            "Bucket": bucket,
            "Key": key,
            "UploadId": upload_id,
            "ChecksumType": "FULL_OBJECT",
            f"Checksum{algorithm}": claimed,
            "MultipartUpload": {
                "Parts": [
                    {
                        "PartNumber": i + 1,
                        "ETag": a["ETag"],
                        f"Checksum{algorithm}": a[f"Checksum{algorithm}"],
                    }
                    for i, a in enumerate(answers)
                ]
            },
        }
        if not ok:
            with pytest.raises(ClientError) as info:
                s3.complete_multipart_upload(**args)
            assert code_of(info.value) == (400, "BadDigest")
            continue
        done = s3.complete_multipart_upload(**args)
        assert done[f"Checksum{algorithm}"] == crc(whole)
        assert done["ChecksumType"] == "FULL_OBJECT"
        got = raw.request("GET", f"/{bucket}/{key}", headers={"x-amz-checksum-mode": "ENABLED"})
        assert got.body == whole
        assert got.headers[f"x-amz-checksum-{algorithm.lower()}"] == crc(whole)
        assert got.headers["x-amz-checksum-type"] == "FULL_OBJECT"
        if algorithm == "CRC32":  # boto3 validates a full-object CRC32 itself
            fetched = s3.get_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
            assert fetched["Body"].read() == whole
    bad_type = raw.request(
        "POST",
        f"/{bucket}/x?uploads",
        headers={"x-amz-checksum-algorithm": "SHA256", "x-amz-checksum-type": "FULL_OBJECT"},
    )
    assert (bad_type.status, s3_error(bad_type).code) == (400, "InvalidRequest")
    nvme = raw.request(
        "POST", f"/{bucket}/x?uploads", headers={"x-amz-checksum-algorithm": "XXHASH64"}
    )
    assert nvme.status == 501
