"""Archive tier (§10): Redis store, URLs, write-through, read fallback, init scan."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis

from amberio.cluster.placement import slot_for_path
from amberio.config import (
    ArchiveConfig,
    ArchiveRedisConfig,
    ArchiveS3Config,
    InitScanConfig,
    InitScanRedisConfig,
    S3Credentials,
)
from amberio.errors import Unavailable
from amberio.storage.archive import Archives, parse_archive_url
from amberio.storage.blobs import BlobStore
from amberio.storage.init_scan import ScanCounts, run_init_scan
from amberio.storage.slots import SlotStore
from tests.cluster.conftest import RedisServer
from tests.storage.nodes import PART, TOTAL_SLOTS, Node, imported, pattern


def archive_config(server: RedisServer) -> ArchiveConfig:
    return ArchiveConfig(
        archive_type="redis",
        redis=ArchiveRedisConfig(url=server.url, key_prefix="test:archive"),
    )


@pytest.fixture
def archived(
    tmp_path: Path, executor: ThreadPoolExecutor, redis_server: RedisServer, rclient: redis.Redis
) -> Iterator[Node]:
    node = Node(tmp_path / "disk", executor, archive_config(redis_server))
    yield node
    node.close()


@pytest.fixture
def plain(tmp_path: Path, executor: ThreadPoolExecutor, rclient: redis.Redis) -> Iterator[Node]:
    node = Node(tmp_path / "disk", executor, None)
    yield node
    node.close()


def test_parse_urls() -> None:
    loc = parse_archive_url("redis://127.0.0.1:6390/3/amberio:archive:a/b.bin@g1-x")
    assert (loc.host, loc.port, loc.db, loc.key) == (
        "127.0.0.1",
        6390,
        3,
        "amberio:archive:a/b.bin@g1-x",
    )
    loc = parse_archive_url("redis://h:1/key")
    assert (loc.db, loc.key) == (0, "key")
    loc = parse_archive_url("s3://bucket/some/key")
    assert (loc.bucket, loc.key) == ("bucket", "some/key")
    for bad in (
        "ftp://h/k",
        "redis://h:1/",
        "redis://:1/k",
        "s3://bucket/",
        "nonsense",
        "redis://h:x/k",
    ):
        with pytest.raises(Unavailable) as info:
            parse_archive_url(bad)
        assert bad in str(info.value)


def test_redis_store_round_trip_and_errors(
    redis_server: RedisServer, tmp_path: Path, rclient: redis.Redis
) -> None:
    data = pattern(3 * 1024 * 1024 + 17)
    files = []
    for i in range(0, len(data), 1_000_000):
        name = tmp_path / f"p{i}"
        name.write_bytes(data[i : i + 1_000_000])
        files.append(str(name))

    async def go() -> None:
        archives = Archives(archive_config(redis_server))
        try:
            url, etag = await archives.write_through("a/b.bin", 4, "w1", files, len(data))
            assert etag is None
            assert url.startswith(
                f"redis://127.0.0.1:{redis_server.port}/0/test:archive:a/b.bin@g4-w1"
            )
            store, key = archives.store_for(url)
            got = b"".join([c async for c in store.read_range(key, 5, len(data) - 10)])
            assert got == data[5:-5]
            with pytest.raises(Unavailable, match="holds"):
                _ = [c async for c in store.read_range(key, 0, len(data) + 1)]
            with pytest.raises(Unavailable, match="does not exist"):
                _ = [c async for c in store.read_range("nope", 0, 1)]
            with pytest.raises(Unavailable, match="bytes read from the parts"):
                await archives.write_through("a/c.bin", 1, "w", files, len(data) + 1)
        finally:
            await archives.close()

    asyncio.run(go())
    assert rclient.get("test:archive:a/b.bin@g4-w1") == data
    assert not rclient.exists("test:archive:a/c.bin@g1-w")
    assert [k for k in rclient.scan_iter() if b"tmp" in k] == []


def test_write_through_then_fallback_after_local_parts_removed(
    archived: Node, rclient: redis.Redis
) -> None:
    data = pattern(5 * PART + 123)
    result = archived.put("cases/a.bin", data)
    head = archived.head("cases/a.bin")
    url = head.document["archive_url"]
    assert url.endswith(
        f"test:archive:cases/a.bin@g{result.generation}-{head.document['write_id']}"
    )
    assert (
        rclient.get(f"test:archive:cases/a.bin@g{result.generation}-{head.document['write_id']}")
        == data
    )
    before = archived.part_files("cases/a.bin")
    shutil.rmtree(archived.blob_dir("cases/a.bin"))
    assert (
        archived.read("cases/a.bin", f"bytes={PART + 5}-{3 * PART}")
        == data[PART + 5 : 3 * PART + 1]
    )
    assert len(archived.part_files("cases/a.bin")) == 3  # parts 1..3 only
    assert archived.read("cases/a.bin") == data
    assert archived.part_files("cases/a.bin") == before
    for name in before:
        assert (
            os.path.basename(name).split(".")[2]
            == hashlib.sha256(Path(name).read_bytes()).hexdigest()
        )


def test_archive_down_fails_put_without_head(tmp_path: Path, executor: ThreadPoolExecutor) -> None:
    from tests.cluster.conftest import closed_port

    config = ArchiveConfig(
        archive_type="redis", redis=ArchiveRedisConfig(url=f"redis://127.0.0.1:{closed_port()}/0")
    )
    node = Node(tmp_path / "disk", executor, config)
    try:
        with pytest.raises(Unavailable, match="archive write"):
            node.put("x/y", b"hello")
        assert node.slots.db(node.slot_of("x/y")).read_head("x/y") is None
        assert node.part_files("x/y") == []
    finally:
        node.close()


def test_imported_head_reads_through_and_advances_state(
    plain: Node, rclient: redis.Redis, redis_server: RedisServer
) -> None:
    data = pattern(4 * PART + 10, seed=7)
    rclient.set("ext/blob", data)
    imported(plain, "imp/x.bin", f"redis://127.0.0.1:{redis_server.port}/ext/blob", len(data))
    assert plain.head("imp/x.bin").document["part_index_state"] == "none"
    assert (
        plain.read("imp/x.bin", f"bytes={2 * PART}-{2 * PART + 99}")
        == data[2 * PART : 2 * PART + 100]
    )
    assert plain.head("imp/x.bin").document["part_index_state"] == "partial"
    files = plain.part_files("imp/x.bin")
    assert len(files) == 1 and files[0].endswith(
        f"part.00000002.{hashlib.sha256(data[2 * PART : 3 * PART]).hexdigest()}"
    )
    rows = plain.slots.db(plain.slot_of("imp/x.bin")).parts("imp/x.bin", 1, 0, 10)
    assert sorted(rows) == [2]
    assert plain.read("imp/x.bin") == data
    assert plain.head("imp/x.bin").document["part_index_state"] == "complete"
    rclient.delete("ext/blob")
    assert plain.read("imp/x.bin", "bytes=-20") == data[-20:]


def test_bad_archive_sources_are_503_naming_url(
    plain: Node, rclient: redis.Redis, redis_server: RedisServer
) -> None:
    data = pattern(2 * PART, seed=3)
    base = f"redis://127.0.0.1:{redis_server.port}"
    rclient.set("short", data[:-1])
    cases = {
        "bad/scheme": "gopher://h/k",
        "bad/missing": f"{base}/missing",
        "bad/short": f"{base}/short",
        "bad/s3": "s3://bucket/key",
    }
    for path, url in cases.items():
        imported(plain, path, url, len(data))
        with pytest.raises(Unavailable) as info:
            plain.read(path, f"bytes={PART}-")
        assert url in str(info.value)
        assert plain.part_files(path) == []
    # A short object is not the blob, even where the bytes a range needs are all there.
    with pytest.raises(Unavailable, match=f"{base}/short holds {2 * PART - 1} bytes"):
        plain.read("bad/short", "bytes=0-9")
    assert plain.part_files("bad/short") == []
    # A part row whose sha256 disagrees with the archived bytes: nothing materialized.
    rclient.set("good", data)
    result = plain.put("bad/sha", data)
    db = plain.slots.db(plain.slot_of("bad/sha"))
    head = plain.head("bad/sha")
    doc = {**head.document, "archive_url": f"{base}/good"}
    rclient.set("good", pattern(2 * PART, seed=4))
    # (Rewrite the meta in place to point at the archive; the part rows stay.)
    from amberio.storage.archive import rewrite_meta

    rewrite_meta(db, head, doc)
    shutil.rmtree(plain.blob_dir("bad/sha"))
    with pytest.raises(Unavailable) as info:
        plain.read("bad/sha")
    assert f"{base}/good" in str(info.value) and result.generation == 1
    assert plain.part_files("bad/sha") == []


def test_init_scan_imports_pages_idempotently(
    tmp_path: Path,
    executor: ThreadPoolExecutor,
    rclient: redis.Redis,
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    entries: list[str] = []
    for i in range(7):
        entries.append(
            json.dumps(
                {
                    "path": f"scan/{i}.bin",
                    "size_bytes": 10,
                    "etag": f"e{i}",
                    "archive_url": f"redis://127.0.0.1:{redis_server.port}/k{i}",
                }
            )
        )
    entries.insert(3, "{not json")
    entries.insert(5, json.dumps({"path": "scan/x", "size_bytes": "ten"}))
    rclient.rpush("scan:list", *entries)
    config = InitScanConfig(
        redis=InitScanRedisConfig(url=redis_server.url, list_key="scan:list", page_size=3)
    )
    disks = [str(tmp_path / "disk")]
    mine = {slot_for_path(f"scan/{i}.bin", TOTAL_SLOTS) for i in range(4)}

    def scan() -> Any:
        return asyncio.run(
            run_init_scan(
                config,
                disks=disks,
                slot_of=lambda p: slot_for_path(p, TOTAL_SLOTS),
                holds=lambda s: s in mine,
                part_size=PART,
            )
        )

    caplog.set_level("INFO")
    counts = scan()
    assert counts.seen == 9 and counts.malformed == 2
    assert counts.imported + counts.other_slots == 7 and counts.imported >= 4
    assert "entry 3 of 'scan:list' skipped" in caplog.text
    assert "entry 5 of 'scan:list' skipped" in caplog.text
    again = scan()
    assert again.imported == 0 and again.unchanged == counts.imported
    slots = SlotStore(disks)
    try:
        head = slots.db(slot_for_path("scan/0.bin", TOTAL_SLOTS)).read_head("scan/0.bin")
        assert head is not None and head.generation == 1
        assert head.document["part_index_state"] == "none"
        assert head.document["archive_url"].endswith("/k0")
    finally:
        slots.close()


def test_concurrent_reads_fetch_a_part_once(
    plain: Node,
    rclient: redis.Redis,
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    data = pattern(3 * PART, seed=9)
    rclient.set("ext/conc", data)
    imported(plain, "imp/conc", f"redis://127.0.0.1:{redis_server.port}/ext/conc", len(data))

    async def go(store: BlobStore) -> list[bytes]:
        async def one() -> bytes:
            plan = store.plan_read("imp/conc", None)
            return b"".join([c async for c in await store.open_stream(plan)])

        return list(await asyncio.gather(*(one() for _ in range(5))))

    caplog.set_level("INFO", logger="amberio.archive")
    assert plain.run(go) == [data] * 5
    fetched = [r for r in caplog.records if "read-through" in r.getMessage()]
    assert len(fetched) == 3
    assert plain.head("imp/conc").document["part_index_state"] == "complete"


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """An Amberio node's own S3 gateway (unsigned requests accepted) as the S3 archive."""
    from tests.http.conftest import running_server

    with running_server(tmp_path_factory.mktemp("s3-archive")) as server:
        yield server.port


def s3_config(port: int, bucket: str, layout: str | None = None) -> ArchiveConfig:
    return ArchiveConfig(
        archive_type="s3",
        layout=layout,  # type: ignore[arg-type]
        s3=ArchiveS3Config(
            bucket=bucket,
            endpoint=f"http://127.0.0.1:{port}",
            allow_http=True,
            prefix="arch",
            credentials=S3Credentials(access_key_id="AKIDTEST", secret_access_key="secret"),
        ),
    )


def test_s3_write_through_and_read_fallback(
    tmp_path: Path, executor: ThreadPoolExecutor, s3_endpoint: int
) -> None:
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{s3_endpoint}",
        aws_access_key_id="AKIDTEST",
        aws_secret_access_key="secret",
        region_name="us-east-1",
    )
    s3.create_bucket(Bucket="archive-bucket")
    node = Node(tmp_path / "disk", executor, s3_config(s3_endpoint, "archive-bucket"))
    try:
        data = pattern(3 * PART + 77, seed=21)
        node.put("s3/blob.bin", data)
        doc = node.head("s3/blob.bin").document
        assert doc["archive_url"] == "s3://archive-bucket/arch/s3/blob.bin"  # mirror layout
        assert doc["archive_etag"]
        stored = s3.get_object(Bucket="archive-bucket", Key="arch/s3/blob.bin")["Body"].read()
        assert stored == data
        shutil.rmtree(node.blob_dir("s3/blob.bin"))
        assert node.read("s3/blob.bin", f"bytes={PART - 3}-{PART + 3}") == data[PART - 3 : PART + 4]
        assert node.read("s3/blob.bin") == data
        # The archived object no longer has the head's ETag (a newer write replaced it):
        # If-Match fails and nothing is served or materialized.
        from amberio.storage.archive import rewrite_meta

        head = node.head("s3/blob.bin")
        db = node.slots.db(node.slot_of("s3/blob.bin"))
        rewrite_meta(db, head, {**head.document, "archive_etag": "0" * 32})
        shutil.rmtree(node.blob_dir("s3/blob.bin"))
        with pytest.raises(Unavailable, match="ETag no longer matches"):
            node.read("s3/blob.bin", "bytes=0-9")
        assert node.part_files("s3/blob.bin") == []
        imported(node, "s3/missing", "s3://archive-bucket/arch/s3/missing", 10)
        with pytest.raises(Unavailable, match="s3://archive-bucket/arch/s3/missing"):
            node.read("s3/missing")
        # Mirror layout: a committed tombstone deletes the archived object.
        node.put("s3/gone.bin", b"bye")
        assert s3.get_object(Bucket="archive-bucket", Key="arch/s3/gone.bin")["Body"].read()

        async def delete(store: BlobStore) -> Any:
            return await store.delete("s3/gone.bin", write_id=None)

        node.run(delete)
        listed = s3.list_objects_v2(Bucket="archive-bucket", Prefix="arch/s3/gone")
        assert listed.get("KeyCount", 0) == 0
    finally:
        node.close()


def test_init_scan_from_an_s3_bucket(
    tmp_path: Path, executor: ThreadPoolExecutor, s3_endpoint: int
) -> None:
    import boto3

    from amberio.config import InitScanS3Config

    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{s3_endpoint}",
        aws_access_key_id="AKIDTEST",
        aws_secret_access_key="secret",
        region_name="us-east-1",
    )
    s3.create_bucket(Bucket="existing")
    bodies = {f"data/{i}.bin": pattern(1000 * (i + 1), seed=30 + i) for i in range(3)}
    for key, body in bodies.items():
        s3.put_object(Bucket="existing", Key=key, Body=body)
    s3.put_object(Bucket="existing", Key="elsewhere/x", Body=b"no")
    config = InitScanConfig(s3=InitScanS3Config(bucket="existing", prefix="data/"))
    # The user's bucket is the archive: reads of imported heads use its credentials.
    plain = Node(tmp_path / "disk", executor, s3_config(s3_endpoint, "existing"))

    def scan() -> ScanCounts:
        return plain.init_scan(config)

    try:
        counts = scan()
        assert (counts.seen, counts.imported) == (3, 3)
        for key, body in bodies.items():
            doc = plain.head(key).document
            assert doc["archive_url"] == f"s3://existing/{key}"
            assert doc["part_index_state"] == "none"
            assert plain.read(key) == body
        assert scan().imported == 0
    finally:
        plain.close()


def test_archive_range_refuses_an_object_that_is_not_the_blob(
    archived: Node, rclient: redis.Redis
) -> None:
    data = pattern(3 * PART + 5, seed=7)
    result = archived.put("proxy/blob.bin", data)
    url = archived.head("proxy/blob.bin").document["archive_url"]

    async def read(store: BlobStore, size: int) -> bytes:
        parts = [c async for c in store.archive_range(url, PART, 2 * PART, None, size)]
        return b"".join(parts)

    assert archived.run(lambda store: read(store, len(data))) == data[PART : 2 * PART]
    key = url.split("/", 4)[4]
    rclient.append(key, b"newer bytes")  # the key now holds some other blob
    with pytest.raises(Unavailable, match="redis://"):
        archived.run(lambda store: read(store, len(data)))
    assert result.generation == 1
