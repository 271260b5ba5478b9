"""The load generator's URLs and checks, its HTTP client (against a tiny local asyncio server),
and the raw-limit program's file I/O."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from benches.httpclient import Connection

from benches import loadgen, raw


def spec(**kw: object) -> loadgen.Spec:
    base: dict[str, object] = dict(
        host="127.0.0.1", port=1, op="list", size=64, concurrency=1, duration=1.0,
        max_bytes=1, prefix="run/list-2500", objects=2500,
    )  # fmt: skip
    base.update(kw)
    return loadgen.Spec(**base)  # type: ignore[arg-type]


def test_urls() -> None:
    native, s3 = spec(), spec(api="s3")
    assert loadgen.object_key(native, 1234) == "run/list-2500/p0001/000234"
    assert loadgen.list_url(native, 2) == (
        "/_/api/v1/blobs?prefix=bench%2Frun%2Flist-2500%2Fp0002%2F&limit=1000"
    )
    assert loadgen.list_url(s3, 0) == (
        "/bench?list-type=2&prefix=run%2Flist-2500%2Fp0000%2F&max-keys=1000"
    )
    assert native.list_prefixes == 3
    assert [loadgen.list_expected(native, j) for j in range(3)] == [1000, 1000, 500]
    get = spec(op="get", prefix="run/data-4KiB", api="s3")
    assert loadgen.object_url(get, loadgen.object_key(get, 7)) == "/bench/run/data-4KiB/000007"
    assert get.put_status == 200 and spec(api="native").put_status == 201
    assert spec(op="range", size=1 << 26, range_size=4096).op_bytes() == 4096
    assert loadgen.count_keys(s3, b"<Key>a</Key><Key>b</Key>") == 2
    assert loadgen.count_keys(native, b'{"items":[{"path":"a"},{"path":"b"}]}') == 2
    assert loadgen.spec_from_json(loadgen.spec_json(spec(endpoints=(("h", 1),)))) == spec(
        endpoints=(("h", 1),)
    )


def test_percentiles() -> None:
    samples = sorted(range(1_000_000, 101_000_000, 1_000_000))  # 1..100 ms
    assert loadgen.percentile_ms(samples, 0.5) == 50.0
    assert loadgen.percentile_ms(samples, 0.99) == 99.0
    assert loadgen.percentile_ms([], 0.5) != loadgen.percentile_ms([], 0.5)  # NaN


def test_client_reads_lengths_and_chunks() -> None:
    body = os.urandom(200_000)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if head.startswith(b"GET /chunked"):
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                for k in range(0, len(body), 70_001):
                    part = body[k : k + 70_001]
                    writer.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                writer.write(b"0\r\n\r\n")
            else:
                writer.write(f"HTTP/1.1 206 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode())
                writer.write(body)
            await writer.drain()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        conn = Connection("127.0.0.1", port, 64 * 1024)
        sink = bytearray()
        status, n = await conn.request(b"GET /chunked HTTP/1.1\r\n\r\n", None, sink)
        assert (status, n, bytes(sink)) == (200, len(body), body)
        sink = bytearray()
        status, n = await conn.request(b"GET /plain HTTP/1.1\r\n\r\n", None, sink)
        assert (status, n, bytes(sink)) == (206, len(body), body)
        status, n = await conn.request(b"GET /plain HTTP/1.1\r\n\r\n", None)  # same connection
        assert (status, n) == (206, len(body))
        conn.close()
        server.close()
        await server.wait_closed()

    asyncio.run(main())


def test_raw_file_io(tmp_path: Path) -> None:
    body = memoryview(os.urandom(3 * 1024 * 1024 + 5))
    dir_fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        raw.write_file(str(tmp_path / "obj"), body, dir_fd)
    finally:
        os.close(dir_fd)
    assert not (tmp_path / "obj.tmp").exists()
    buf = memoryview(bytearray(raw.READ_BUFFER))
    assert raw.read_file(str(tmp_path / "obj"), buf) == len(body)
    assert raw.read_file(str(tmp_path / "obj"), buf, offset=1000, length=4096) == 4096
    assert bytes(buf[:4096]) == bytes(body[1000:5096])
