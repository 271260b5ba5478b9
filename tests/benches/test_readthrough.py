"""benches/readthrough.py: the range placement, and the client that verifies what it streams
(against a tiny local http.server): wrong bytes, a short body or a wrong status never count."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from benches import readthrough as rt

MiB = 1024 * 1024
BODY = bytes(range(256)) * 12_289  # ~3 MiB, not a multiple of the 1 MiB read buffer


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    received: list[bytes] = []  # noqa: RUF012

    def do_GET(self) -> None:
        body = {"/good": BODY, "/bad": BODY[:-1] + b"x", "/short": BODY[:-1]}.get(self.path)
        self.send_response(200 if body is not None else 404)
        body = body or b"{}"
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self) -> None:
        Handler.received.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def server() -> Iterator[str]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def test_range_start_stays_inside_one_part() -> None:
    part = 8 * MiB
    for size in (4 * MiB, 16 * MiB, 64 * MiB, 100 * MiB):
        start = rt.range_start(size)
        end = start + rt.RANGE_BYTES - 1
        assert end < size
        assert start // part == end // part, size
    assert rt.range_start(2 * MiB) == MiB


def test_client_counts_only_verified_bytes() -> None:
    sha = hashlib.sha256(BODY).hexdigest()
    with server() as base:
        reqs = [
            rt.Request(p, "GET", f"{base}{p}", 200, len(BODY), sha)
            for p in ("/good", "/bad", "/short", "/missing", "/good")
        ]
        outcomes, wall = rt.run_all(reqs, 2)
    assert wall > 0
    by_key: dict[str, list[rt.Outcome]] = {}
    for o in outcomes:
        by_key.setdefault(o.key, []).append(o)
    assert [(o.nbytes, o.error) for o in by_key["/good"]] == [(len(BODY), "")] * 2
    assert by_key["/bad"][0].nbytes == 0 and "bytes differ" in by_key["/bad"][0].error
    assert by_key["/short"][0].nbytes == 0 and "bytes differ" in by_key["/short"][0].error
    assert by_key["/missing"][0].error == "status 404"


def test_put_sends_chunks_in_order() -> None:
    chunks = (memoryview(BODY)[:MiB], memoryview(BODY)[MiB:], b"tail")
    Handler.received.clear()
    with server() as base:
        client = rt.Client()
        try:
            out = client.run(rt.Request("k", "PUT", f"{base}/k", 201, len(BODY) + 4, body=chunks))
        finally:
            client.close()
    assert out.error == "" and out.nbytes == len(BODY) + 4
    assert Handler.received == [BODY + b"tail"]
