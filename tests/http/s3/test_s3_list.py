"""ListObjectsV2 and ListObjects (v1), bucket operations."""

from __future__ import annotations

import urllib.parse
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.http.conftest import Client
from tests.http.s3.conftest import s3_error, texts, xml_doc

KEYS = ["a/1", "a/2", "a/b/3", "b/4", "c", "d/5", "d/6/7", "e"]


@pytest.fixture
def filled(s3: Any, bucket: str) -> str:
    for key in KEYS:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    return bucket


def all_pages(s3: Any, **kwargs: Any) -> tuple[list[str], list[str], int]:
    keys: list[str] = []
    prefixes: list[str] = []
    pages = 0
    token: str | None = None
    while True:
        args = dict(kwargs)
        if token:
            args["ContinuationToken"] = token
        page = s3.list_objects_v2(**args)
        pages += 1
        keys += [c["Key"] for c in page.get("Contents", [])]
        prefixes += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        assert page["KeyCount"] == len(page.get("Contents", [])) + len(
            page.get("CommonPrefixes", [])
        )
        if not page["IsTruncated"]:
            assert "NextContinuationToken" not in page
            return keys, prefixes, pages
        token = page["NextContinuationToken"]


def test_list_v2_all_and_paged(s3: Any, filled: str) -> None:
    page = s3.list_objects_v2(Bucket=filled)
    assert [c["Key"] for c in page["Contents"]] == KEYS
    assert page["KeyCount"] == len(KEYS) and not page["IsTruncated"]
    first = page["Contents"][0]
    assert (
        first["Size"] == 3 and first["ETag"].startswith('"') and first["StorageClass"] == "STANDARD"
    )
    keys, _, pages = all_pages(s3, Bucket=filled, MaxKeys=2)
    assert keys == KEYS and pages == 4


def test_list_v2_delimiter_prefix_start_after(s3: Any, filled: str) -> None:
    keys, prefixes, _ = all_pages(s3, Bucket=filled, Delimiter="/")
    assert keys == ["c", "e"] and prefixes == ["a/", "b/", "d/"]
    keys, prefixes, pages = all_pages(s3, Bucket=filled, Delimiter="/", MaxKeys=1)
    assert keys == ["c", "e"] and prefixes == ["a/", "b/", "d/"] and pages == 5
    keys, prefixes, _ = all_pages(s3, Bucket=filled, Prefix="a/", Delimiter="/")
    assert keys == ["a/1", "a/2"] and prefixes == ["a/b/"]
    keys, _, _ = all_pages(s3, Bucket=filled, StartAfter="b/4")
    assert keys == ["c", "d/5", "d/6/7", "e"]
    keys, prefixes, _ = all_pages(s3, Bucket=filled, StartAfter="a/", Delimiter="/")
    assert prefixes == ["b/", "d/"] and keys == ["c", "e"]
    keys, _, _ = all_pages(s3, Bucket=filled, Prefix="zz")
    assert keys == []


def test_list_v1_markers(s3: Any, filled: str) -> None:
    keys: list[str] = []
    marker = ""
    while True:
        page = s3.list_objects(Bucket=filled, MaxKeys=3, Marker=marker)
        keys += [c["Key"] for c in page.get("Contents", [])]
        if not page["IsTruncated"]:
            break
        marker = page["NextMarker"]
    assert keys == KEYS
    page = s3.list_objects(Bucket=filled, Delimiter="/")
    assert [p["Prefix"] for p in page["CommonPrefixes"]] == ["a/", "b/", "d/"]
    assert page["Contents"][0]["Owner"]["ID"]
    paged = [
        c["Key"]
        for p in s3.get_paginator("list_objects").paginate(
            Bucket=filled, PaginationConfig={"PageSize": 2}
        )
        for c in p.get("Contents", [])
    ]
    assert paged == KEYS


def test_list_bad_parameters(raw: Client, filled: str) -> None:
    t = f"/{filled}?list-type=2"
    cases = [
        ("&continuation-token=***", 400, "InvalidArgument"),
        ("&continuation-token=", 400, "InvalidArgument"),
        ("&encoding-type=base64", 400, "InvalidArgument"),
        ("&max-keys=-1", 400, "InvalidArgument"),
        ("&max-keys=abc", 400, "InvalidArgument"),
        ("&fetch-owner=true", 501, "NotImplemented"),
        ("&fetch-owner=maybe", 400, "InvalidArgument"),
        ("&versionId=1", 501, "NotImplemented"),
    ]
    for suffix, status, code in cases:
        resp = raw.request("GET", t + suffix)
        assert (resp.status, s3_error(resp).code) == (status, code), suffix
    attrs = raw.request("GET", t, headers={"x-amz-optional-object-attributes": "RestoreStatus"})
    assert (attrs.status, s3_error(attrs).code) == (501, "NotImplemented")
    other = raw.request("GET", f"/{filled}?list-type=3")
    assert other.status == 400
    assert raw.request("GET", t + "&fetch-owner=false").status == 200
    capped = xml_doc(raw.request("GET", t + "&max-keys=5000"))
    assert texts(capped, "MaxKeys") == ["1000"]
    zero = xml_doc(raw.request("GET", t + "&max-keys=0"))
    assert texts(zero, "KeyCount") == ["0"] and texts(zero, "Contents") == []


def test_list_encoding_type_url(s3: Any, raw: Client, bucket: str) -> None:
    keys = ["sp ace", "plus+", "pct%", "ctl\x01x", "ünï"]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    resp = raw.request("GET", f"/{bucket}?list-type=2&encoding-type=url")
    root = xml_doc(resp)
    encoded = texts(root, "Contents/Key")
    assert sorted(urllib.parse.unquote_plus(k) for k in encoded) == sorted(keys)
    assert texts(root, "EncodingType") == ["url"]
    # boto3 asks for url encoding by default and decodes
    assert sorted(c["Key"] for c in s3.list_objects_v2(Bucket=bucket)["Contents"]) == sorted(keys)
    plain = raw.request("GET", f"/{bucket}?list-type=2")
    assert b"&#x1;" in plain.body


def test_buckets(s3: Any, raw: Client, bucket: str) -> None:
    with pytest.raises(ClientError) as info:
        s3.head_bucket(Bucket=bucket)
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    s3.create_bucket(Bucket=bucket)
    s3.head_bucket(Bucket=bucket)
    assert bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    with pytest.raises(ClientError) as info:
        s3.create_bucket(Bucket=bucket)
    assert info.value.response["Error"]["Code"] == "BucketAlreadyOwnedByYou"
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    s3.put_object(Bucket=bucket, Key="x", Body=b"x")
    with pytest.raises(ClientError) as info:
        s3.delete_bucket(Bucket=bucket)
    assert (
        info.value.response["ResponseMetadata"]["HTTPStatusCode"],
        info.value.response["Error"]["Code"],
    ) == (409, "BucketNotEmpty")
    s3.delete_object(Bucket=bucket, Key="x")
    s3.delete_bucket(Bucket=bucket)
    with pytest.raises(ClientError) as info:
        s3.delete_bucket(Bucket=bucket)
    assert info.value.response["Error"]["Code"] == "NoSuchBucket"
    assert bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert s3.get_bucket_location(Bucket=bucket)["LocationConstraint"] is None
    assert "Status" not in s3.get_bucket_versioning(Bucket=bucket)


def test_implicit_buckets_are_listed_and_internal_records_never(
    s3: Any, raw: Client, bucket: str
) -> None:
    s3.put_object(Bucket=bucket, Key="deep/key", Body=b"x")
    s3.create_multipart_upload(Bucket=bucket, Key="pending")
    names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert bucket in names
    assert all(not n.startswith(".") for n in names)
    s3.head_bucket(Bucket=bucket)
    assert [c["Key"] for c in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["deep/key"]
    internal = raw.request("GET", "/.amberio-s3?list-type=2")
    assert (internal.status, s3_error(internal).code) == (400, "InvalidBucketName")


def test_bucket_bad_inputs(raw: Client, bucket: str) -> None:
    for name in ("Bad_Name", "xy", "-abc", "a..b"):
        resp = raw.request("PUT", f"/{name}")
        assert (resp.status, s3_error(resp).code) == (400, "InvalidBucketName"), name
    bad_xml = raw.request("PUT", f"/{bucket}", b"<CreateBucketConfiguration><Loc")
    assert (bad_xml.status, s3_error(bad_xml).code) == (400, "MalformedXML")
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;">]>'
        b"<CreateBucketConfiguration><LocationConstraint>&c;</LocationConstraint>"
        b"</CreateBucketConfiguration>"
    )
    resp = raw.request("PUT", f"/{bucket}", bomb)
    assert (resp.status, s3_error(resp).code) == (400, "MalformedXML")
    assert raw.request("HEAD", f"/{bucket}").status == 404
    ok = raw.request(
        "PUT",
        f"/{bucket}",
        b"<CreateBucketConfiguration><LocationConstraint>"
        b"eu-west-1</LocationConstraint></CreateBucketConfiguration>",
    )
    assert ok.status == 200
    for method, path in (("POST", "/"), ("PATCH", f"/{bucket}"), ("PATCH", f"/{bucket}/k")):
        resp = raw.request(method, path)
        assert resp.status in (405, 501), (method, path, resp)
        assert s3_error(resp).code in ("MethodNotAllowed", "NotImplemented")
    for sub in ("acl", "policy", "cors", "lifecycle", "tagging", "website", "versions"):
        resp = raw.request("GET", f"/{bucket}?{sub}")
        assert (resp.status, s3_error(resp).code) == (501, "NotImplemented"), sub


def test_list_buckets_pages_with_max_buckets(s3: Any, raw: Client, bucket: str) -> None:
    names = [f"{bucket}-p{i}" for i in range(5)]
    for name in names:
        s3.create_bucket(Bucket=name)
    seen: list[str] = []
    kwargs: dict[str, Any] = {"Prefix": bucket + "-p", "MaxBuckets": 2}
    pages = 0
    while True:
        page = s3.list_buckets(**kwargs)
        pages += 1
        assert len(page["Buckets"]) <= 2
        seen += [b["Name"] for b in page["Buckets"]]
        if "ContinuationToken" not in page:
            break
        kwargs["ContinuationToken"] = page["ContinuationToken"]
    assert (seen, pages) == (names, 3)
    everything = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert set(names) <= set(everything)


def test_list_buckets_bad_paging_inputs(raw: Client, bucket: str) -> None:
    for value in ("0", "-1", "abc", "10001", "", "²", "\u0661"):
        resp = raw.request("GET", f"/?max-buckets={urllib.parse.quote(value)}")
        assert (resp.status, s3_error(resp).code) == (400, "InvalidArgument"), value
    for token in ("***", "djEAa2Zvbw=="):  # garbage; an object-listing token is not a bucket token
        resp = raw.request("GET", f"/?continuation-token={urllib.parse.quote(token)}")
        assert (resp.status, s3_error(resp).code) == (400, "InvalidArgument"), token
