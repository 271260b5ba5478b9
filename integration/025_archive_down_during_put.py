#!/usr/bin/env python3
"""025: the archive is unreachable during a PUT (§10.2): 5xx, and no head is committed.

Needs the S3 endpoint of the S3 archive cases (`AMBERIO_S3_*`, see 012). Four clusters, one
after the other:

1. `archive_type: s3` whose endpoint is a closed port: a PUT answers 5xx with an error naming
   the archive; GET answers 404 and no replica has a head for the path.
2. `archive_type: s3` on the real S3 server behind a TCP relay (so the test can take the
   server away from the nodes without stopping it for other cases): a first PUT is archived;
   the relay is stopped (connections refused, open ones cut); a second PUT of the same path
   answers 5xx; every replica still has the first head (generation, `archive_etag`), GET
   serves the first body and the S3 object still is the first body. With the relay back, a
   PUT succeeds again.
3. `archive_type: redis` on the registry's Redis behind a relay: the same sequence.
4. `archive_type: s3` with a wrong secret key (the server answers 403): PUT 5xx, no head.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import urllib.parse
from typing import Any

from _harness import (
    Case,
    Cluster,
    RedisArchiveKeys,
    S3Target,
    check,
    eventually,
    expect_eq,
    expect_error_body,
    expect_status,
    pattern_bytes,
    run_case,
    s3_target,
    strip_etag,
)

PART_SIZE = 100_000
FIRST = pattern_bytes(250_000, 251)
SECOND = pattern_bytes(180_000, 252)
THIRD = pattern_bytes(90_000, 253)


class Relay:
    """A TCP relay 127.0.0.1:<port> → target; `stop()` refuses new connections and cuts the
    open ones (as a server going down would), `start()` listens on the same port again."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self.listener: socket.socket | None = None
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self.lock:
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def stop(self) -> None:
        if self.listener is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone would not, and
            # the port would go on accepting.
            with contextlib.suppress(OSError):
                self.listener.shutdown(socket.SHUT_RDWR)
            self.listener.close()
            self.listener = None
        with self.lock:
            conns, self.conns = self.conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def no_head_anywhere(cluster: Cluster, path: str) -> None:
    slot = cluster[0].api.slot_of(path)
    for node in cluster.replicas_of(path):
        doc = expect_status(node.api.internal_head(slot, path), 200, f"{node} head").json()
        check(not doc.get("found"), f"{node} has a head for {path} after a failed PUT: {doc}")
    expect_status(cluster[0].api.get(path), 404, f"GET {path} after a failed PUT")


def expect_archive_error(resp: Any, what: str) -> None:
    check(500 <= resp.status < 600, f"{what}: expected 5xx, got {resp.describe()}")
    message = expect_error_body(resp, what)["error"]
    check("archive" in message.lower(), f"{what}: the error does not name the archive: {message}")


def put_fails_and_first_stays(case: Case, cluster: Cluster, path: str, what: str) -> None:
    """The archive is down: a PUT of `path` fails, the first version stays everywhere."""
    entry = cluster[0]
    slot = entry.api.slot_of(path)
    before = {}
    for node in cluster.replicas_of(path):
        doc = expect_status(node.api.internal_head(slot, path), 200, f"{node} head").json()
        before[node.node_id] = doc
    resp = entry.api.put(path, SECOND)
    expect_archive_error(resp, f"{what}: PUT with the archive down")
    case.note(f"{what}: PUT with the archive down -> {resp.status} {resp.json()['error']}")
    for node in cluster.replicas_of(path):
        doc = expect_status(node.api.internal_head(slot, path), 200, f"{node} head").json()
        old = before[node.node_id]
        expect_eq(doc.get("generation"), old.get("generation"), f"{what}: {node} generation")
        expect_eq(doc.get("head_sha256"), old.get("head_sha256"), f"{what}: {node} head")
    got = expect_status(entry.api.get(path), 200, f"{what}: GET after the failed PUT")
    check(got.body == FIRST, f"{what}: GET after the failed PUT does not serve the first body")


def wait_all_heads(cluster: Cluster, path: str, generation: int) -> list[dict[str, Any]]:
    slot = cluster[0].api.slot_of(path)
    metas = []
    for node in cluster.replicas_of(path):

        def probe(node: Any = node) -> dict[str, Any]:
            doc = expect_status(node.api.internal_head(slot, path), 200, f"{node} head").json()
            check(doc.get("generation") == generation, f"{node}: generation {doc}")
            meta = doc.get("meta")
            assert isinstance(meta, dict)
            return meta

        metas.append(eventually(probe, 10.0))
    return metas


def s3_closed_port(case: Case, s3: S3Target, prefix: str) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    case.step(f"1. S3 archive at a closed port ({endpoint}): PUT fails, no head")
    cluster = case.cluster(
        "s3closed",
        part_size=PART_SIZE,
        extra_config={"archive": s3.archive_config(prefix, endpoint=endpoint)},
    )
    path = "cases/025/closed.bin"
    expect_archive_error(cluster[0].api.put(path, FIRST), "PUT, S3 at a closed port")
    no_head_anywhere(cluster, path)
    cluster.stop()


def s3_goes_down(case: Case, s3: S3Target, prefix: str) -> None:
    parts = urllib.parse.urlsplit(s3.endpoint)
    relay = Relay(parts.hostname or "127.0.0.1", parts.port or 80)
    relay.start()
    case.step("2. S3 archive through a relay; first PUT archived, then the S3 server is gone")
    try:
        endpoint = f"http://127.0.0.1:{relay.port}"
        cluster = case.cluster(
            "s3down",
            part_size=PART_SIZE,
            extra_config={"archive": s3.archive_config(prefix, endpoint=endpoint)},
        )
        path = "cases/025/s3.bin"
        key = f"{prefix}/{path}"
        entry = cluster[0]
        generation = expect_status(entry.api.put(path, FIRST), 201, "first PUT").json()[
            "generation"
        ]
        metas = wait_all_heads(cluster, path, generation)
        client = s3.client()
        etag = strip_etag(client.head_object(Bucket=s3.bucket, Key=key)["ETag"])
        for meta in metas:
            expect_eq(meta.get("archive_etag"), etag, "archive_etag of the first PUT")
        relay.stop()
        put_fails_and_first_stays(case, cluster, path, "S3 down")
        obj = client.get_object(Bucket=s3.bucket, Key=key)
        check(obj["Body"].read() == FIRST, "the S3 object is no longer the first body")
        relay.start()
        resp = expect_status(entry.api.put(path, THIRD), 201, "PUT with the S3 server back")
        metas = wait_all_heads(cluster, path, resp.json()["generation"])
        obj = client.get_object(Bucket=s3.bucket, Key=key)
        check(obj["Body"].read() == THIRD, "the S3 object is not the third body")
        expect_eq(metas[0].get("archive_etag"), strip_etag(obj["ETag"]), "archive_etag")
        cluster.stop()
    finally:
        relay.stop()


def redis_goes_down(case: Case) -> None:
    registry = urllib.parse.urlsplit(case.opts.redis_url)
    relay = Relay(registry.hostname or "127.0.0.1", registry.port or 6379)
    relay.start()
    db = registry.path.strip("/") or "0"
    case.step("3. Redis archive through a relay; first PUT archived, then Redis is gone")
    redis_archive = RedisArchiveKeys(case.opts.redis_url, "025")
    client, key_prefix = redis_archive.client, redis_archive.key_prefix
    try:
        archive = redis_archive.archive_config(f"redis://127.0.0.1:{relay.port}/{db}")
        cluster = case.cluster("redisdown", part_size=PART_SIZE, extra_config={"archive": archive})
        path = "cases/025/redis.bin"
        entry = cluster[0]
        generation = expect_status(entry.api.put(path, FIRST), 201, "first PUT").json()[
            "generation"
        ]
        metas = wait_all_heads(cluster, path, generation)
        url = str(metas[0].get("archive_url"))
        check(url.startswith(f"redis://127.0.0.1:{relay.port}/"), f"archive_url {url}")
        relay.stop()
        put_fails_and_first_stays(case, cluster, path, "Redis down")
        keys = sorted(k.decode() for k in client.scan_iter(match=f"{key_prefix}:*"))
        expect_eq(len(keys), 1, f"archived keys under {key_prefix} (only the first PUT's)")
        check(client.get(keys[0]) == FIRST, "the archived value is not the first body")
        relay.start()
        expect_status(entry.api.put(path, THIRD), 201, "PUT with Redis back")
        cluster.stop()
    finally:
        relay.stop()
        redis_archive.close()


def s3_refuses(case: Case, s3: S3Target, prefix: str) -> None:
    case.step("4. S3 archive with a wrong secret key (403): PUT fails, no head")
    cluster = case.cluster(
        "s3denied",
        part_size=PART_SIZE,
        extra_config={"archive": s3.archive_config(prefix, secret_access_key="wrong-secret")},
    )
    path = "cases/025/denied.bin"
    expect_archive_error(cluster[0].api.put(path, FIRST), "PUT, S3 refusing the keys")
    no_head_anywhere(cluster, path)
    listed = s3.client().list_objects_v2(Bucket=s3.bucket, Prefix=f"{prefix}/{path}")
    expect_eq(listed.get("KeyCount", 0), 0, "objects written with a wrong key")
    cluster.stop()


def main(case: Case) -> None:
    s3 = s3_target()
    with s3.case_prefix("025") as prefix:
        case.soft("S3 at a closed port", lambda: s3_closed_port(case, s3, prefix))
        case.soft("S3 goes down", lambda: s3_goes_down(case, s3, prefix))
        case.soft("Redis goes down", lambda: redis_goes_down(case))
        case.soft("S3 refuses the keys", lambda: s3_refuses(case, s3, prefix))


if __name__ == "__main__":
    raise SystemExit(run_case(main))
