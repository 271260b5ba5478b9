"""Heal (slotlets, heads, repair), anti-entropy passes and reads that replace a corrupted
part, on real slot databases in temp dirs; peers are in-process fakes (no HTTP).

The heal routes' HTTP surface (bad inputs, answers) is tested at the end against a real
single-node `amberio serve`.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from amberio.cluster import heal
from amberio.cluster.antientropy import AntiEntropySettings
from amberio.cluster.heal import RateLimiter, Slotlet, differing, slotlets
from amberio.cluster.replication import Coordinator
from amberio.storage.heads import Head
from tests.cluster.fakes import (
    IDS,
    PART,
    FakeCluster,
    FakeNode,
    body,
    coordinator,
    run,
)

# ---- digests ---------------------------------------------------------------------------


def test_slotlets_bucket_by_the_path_hash_prefix() -> None:
    keys = [(f"p{i}", "meta", 1, "ab" * 32) for i in range(50)]
    lets = slotlets(keys, 1)
    assert sum(s.objects for s in lets) == 50
    for let in lets:
        members = [k for k in keys if heal.path_hash(k[0]).startswith(let.prefix)]
        assert let.objects == len(members)
        assert let.digest == heal.digest(members)
    assert [s.prefix for s in lets] == sorted(s.prefix for s in lets)
    assert slotlets(keys, 0) == [Slotlet(prefix="", digest=heal.digest(keys), objects=50)]


def test_digest_is_order_independent_and_covers_every_field() -> None:
    a = ("a", "meta", 1, "1" * 64)
    b = ("b", "tombstone", 2, "2" * 64)
    assert heal.digest([a, b]) == heal.digest([b, a])
    expected = hashlib.sha256(
        b'["a","meta",1,"' + b"1" * 64 + b'"]\n["b","tombstone",2,"' + b"2" * 64 + b'"]\n'
    ).hexdigest()
    assert heal.digest([a, b]) == expected
    for changed in (("a", "tombstone", 1, "1" * 64), ("a", "meta", 2, "1" * 64)):
        assert heal.digest([changed, b]) != heal.digest([a, b])


def test_differing_counts_missing_buckets() -> None:
    mine = [Slotlet("0", "x", 1), Slotlet("1", "y", 1)]
    theirs = [Slotlet("1", "z", 1), Slotlet("2", "w", 1)]
    assert differing(mine, theirs) == ["0", "1", "2"]
    assert differing(mine, mine) == []


# ---- repair ----------------------------------------------------------------------------


def test_repair_pulls_head_and_parts(cluster: FakeCluster) -> None:
    data = body(200_000, 1)
    path = "docs/a.bin"
    slot = cluster.placement.slot_of(path)

    async def go() -> None:
        await cluster["node-1"].put(path, data)
        report = await cluster["node-2"].healer.repair(slot, "node-1", [path])
        assert (report.repaired_objects, report.skipped_objects, report.errors) == (1, 0, [])
        assert report.moved_bytes == 200_000 and report.parts_fetched == 4
        assert report.heads_applied == 1
        assert await cluster["node-2"].read(path) == data
        # In sync now: a second call moves nothing and still counts it repaired.
        again = await cluster["node-2"].healer.repair(slot, "node-1", [path])
        assert (again.repaired_objects, again.moved_bytes, again.heads_applied) == (1, 0, 0)

    run(go())


def test_repair_skips_what_the_source_lacks_or_where_ours_wins(cluster: FakeCluster) -> None:
    path, other = "x/1", "x/2"

    async def go() -> None:
        await cluster.write(path, b"one", on=["node-1", "node-2"])
        await cluster["node-2"].put(path, b"two")  # node-2 is ahead
        slot = cluster.placement.slot_of(path)
        paths = [path] + ([other] if cluster.placement.slot_of(other) == slot else [])
        report = await cluster["node-2"].healer.repair(slot, "node-1", paths)
        assert report.repaired_objects == 0
        assert report.skipped_objects == len(paths)
        assert await cluster["node-2"].read(path) == b"two"

    run(go())


def test_repair_dry_run_changes_nothing(cluster: FakeCluster) -> None:
    path = "dry/run"
    slot = cluster.placement.slot_of(path)

    async def go() -> None:
        await cluster["node-1"].put(path, body(100_000, 2))
        report = await cluster["node-3"].healer.repair(slot, "node-1", [path], dry_run=True)
        assert report.dry_run and report.repaired_objects == 1 and report.moved_bytes == 100_000
        assert cluster["node-3"].head(path) is None
        assert cluster["node-3"].blobs.part_rows(slot, path, 1) == []

    run(go())


def test_repair_replaces_a_corrupted_local_part(cluster: FakeCluster) -> None:
    data = body(150_000, 3)
    path = "c/orrupt"
    slot = cluster.placement.slot_of(path)

    async def go() -> None:
        await cluster.write(path, data, on=["node-1", "node-2"])
        corrupt(cluster["node-2"].part_file(path, 1), 10)
        report = await cluster["node-2"].healer.repair(slot, "node-1", [path])
        assert report.repaired_objects == 1 and report.moved_bytes == PART
        assert report.heads_applied == 0
        assert await cluster["node-2"].read(path) == data
        quarantine = os.path.join(cluster["node-2"].disk, "amberio", "quarantine")
        assert len(os.listdir(quarantine)) == 1

    run(go())


def test_repair_of_a_tombstone(cluster: FakeCluster) -> None:
    path = "t/gone"

    async def go() -> None:
        await cluster.write(path, b"x", on=IDS)
        await cluster.delete(path, on=["node-1"])
        slot = cluster.placement.slot_of(path)
        report = await cluster["node-3"].healer.repair(slot, "node-1", [path])
        assert report.repaired_objects == 1 and report.heads_applied == 1
        head = cluster["node-3"].head(path)
        assert head is not None and head.deleted

    run(go())


def test_repair_reports_an_unreachable_source(cluster: FakeCluster) -> None:
    path = "u/nreachable"
    slot = cluster.placement.slot_of(path)
    cluster["node-1"].up = False
    report = run(cluster["node-2"].healer.repair(slot, "node-1", [path]))
    assert report.repaired_objects == report.skipped_objects == 0
    assert [e.path for e in report.errors] == [path]


def test_repair_when_the_source_lost_a_part(cluster: FakeCluster) -> None:
    path = "lost/part"
    slot = cluster.placement.slot_of(path)

    async def go() -> None:
        await cluster["node-1"].put(path, body(150_000, 4))
        os.unlink(cluster["node-1"].part_file(path, 2))
        report = await cluster["node-2"].healer.repair(slot, "node-1", [path])
        assert report.repaired_objects == 0 and len(report.errors) == 1
        assert cluster["node-2"].head(path) is None  # never a head without its parts

    run(go())


# ---- anti-entropy ------------------------------------------------------------------------


def paths_in_many_slots(count: int) -> list[str]:
    return [f"ae/{i:03d}.bin" for i in range(count)]


def test_a_node_that_was_down_converges_in_one_pass(cluster: FakeCluster) -> None:
    paths = paths_in_many_slots(24)
    contents = {p: body(1000 + 9000 * (i % 3), i) for i, p in enumerate(paths)}

    async def go() -> None:
        for p in paths:
            await cluster.write(p, b"old", on=IDS)
        cluster["node-3"].up = False
        for p in paths:
            await cluster.write(p, contents[p], on=["node-1", "node-2"])
        await cluster.delete(paths[0], on=["node-1", "node-2"])
        cluster["node-3"].up = True
        assert cluster.digests("node-3") != cluster.digests("node-1")

        stats = await cluster["node-3"].anti_entropy().run_pass()
        assert stats.peers_compared == 2 and stats.peers_unreachable == 0
        assert stats.heads_pulled == len(paths)
        assert stats.errors == 0
        assert cluster.digests("node-3") == cluster.digests("node-1") == cluster.digests("node-2")
        for p in paths[1:]:
            assert await cluster["node-3"].read(p) == contents[p]
        head = cluster["node-3"].head(paths[0])
        assert head is not None and head.deleted
        again = await cluster["node-3"].anti_entropy().run_pass()
        assert again.slots_differing == 0 and again.heads_pulled == 0

    run(go())


def test_each_node_pulls_only_what_it_lacks(cluster: FakeCluster) -> None:
    async def go() -> None:
        await cluster.write("only/on-1", b"1", on=["node-1"])
        await cluster.write("only/on-2", b"2", on=["node-2"])
        stats = await cluster["node-1"].anti_entropy().run_pass()
        assert stats.heads_pulled == 1
        assert cluster["node-1"].head("only/on-2") is not None
        assert cluster["node-2"].head("only/on-1") is None  # node-2 pulls in its own pass
        await cluster["node-2"].anti_entropy().run_pass()
        await cluster["node-3"].anti_entropy().run_pass()
        assert cluster.digests("node-1") == cluster.digests("node-2") == cluster.digests("node-3")

    run(go())


def test_an_unreachable_peer_is_skipped(cluster: FakeCluster) -> None:
    async def go() -> None:
        await cluster.write("s/x", b"x", on=["node-2"])
        cluster["node-3"].up = False
        ae = cluster["node-1"].anti_entropy()
        started = time.monotonic()
        stats = await ae.run_pass()
        assert time.monotonic() - started < 5
        assert stats.peers_unreachable == 1 and stats.peers_compared == 1
        assert stats.heads_pulled == 1
        assert ae.totals.heads_pulled == 1 and ae.passes == 1

    run(go())


def test_a_peer_marked_dead_is_not_asked(cluster: FakeCluster) -> None:
    ae = cluster["node-1"].anti_entropy()
    ae.alive = lambda node: node != "node-2"
    peers = cluster["node-1"].peers
    before = peers.requests
    stats = run(ae.run_pass())
    assert stats.peers_unreachable == 1 and stats.peers_compared == 1
    assert peers.requests - before == 1  # one digest request, to node-3 only


def test_the_pass_runs_gc(cluster: FakeCluster) -> None:
    ae = cluster["node-1"].anti_entropy(gc_grace_seconds=0.0)
    run(cluster.write("g/c", b"one", on=["node-1"]))
    stats = run(ae.run_pass())
    assert stats.garbage is not None and stats.garbage.slots >= 1
    second = run(ae.run_pass())  # interval not elapsed: no GC this time
    assert second.garbage is None


def test_the_loop_passes_soon_after_start_and_stops(cluster: FakeCluster) -> None:
    async def go() -> None:
        await cluster.write("loop/x", b"x", on=["node-1"])
        ae = cluster["node-2"].anti_entropy(start_delay_seconds=0.1, interval_seconds=0.2)
        stop = asyncio.Event()
        task = asyncio.create_task(ae.run(stop))
        deadline = time.monotonic() + 5
        while ae.passes < 2 and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, 5)
        assert ae.passes >= 2 and ae.totals.heads_pulled == 1

    run(go())


def test_rate_limiter_spreads_operations() -> None:
    async def go() -> float:
        limiter = RateLimiter(ops_per_second=100, bytes_per_second=0)
        started = time.monotonic()
        for _ in range(150):  # 100 of burst, 50 more at 100/s
            await limiter.op()
        await limiter.data(10**9)  # unlimited
        return time.monotonic() - started

    elapsed = run(go())
    assert 0.35 < elapsed < 2.0


def test_settings_from_config_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    class Section:
        interval_seconds = 7.0
        gc_grace_seconds = 100.0

    monkeypatch.setenv("AMBERIO_AE_OPS_PER_SECOND", "12")
    settings = AntiEntropySettings.from_config(Section())
    assert settings.interval_seconds == 7.0 and settings.gc_grace_seconds == 100.0
    assert settings.ops_per_second == 12.0
    assert settings.gc_interval_seconds == 50.0
    assert AntiEntropySettings(interval_seconds=300).gc_interval_seconds == 3600.0


# ---- reads that meet a corrupted local part ----------------------------------------------


def corrupt(file: str, offset: int) -> None:
    with open(file, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


async def read_via(coord: Coordinator, path: str, range_header: str | None = None) -> bytes:
    plan = await coord.plan_read(path, range_header)
    out = bytearray()
    async for piece in await coord.open_stream(plan):
        out += piece
    return bytes(out)


@pytest.mark.parametrize("consistency", ["quorum", "local"])
def test_read_replaces_a_corrupted_first_part(cluster: FakeCluster, consistency: str) -> None:
    data = body(100_000, 7)
    path = "bitrot/small"

    async def go() -> None:
        await cluster.write(path, data, on=IDS)
        bad = cluster["node-1"].part_file(path, 0)
        corrupt(bad, 5)
        coord = coordinator(cluster, "node-1", consistency)
        assert await read_via(coord, path) == data
        # The bad file was replaced by a good copy.
        assert sha256_of(bad) == os.path.basename(bad).split(".")[-1]
        assert await cluster["node-1"].read(path) == data
        assert quarantined(cluster["node-1"]) == 1

    run(go())


def sha256_of(file: str) -> str:
    return hashlib.sha256(Path(file).read_bytes()).hexdigest()


def quarantined(node: FakeNode) -> int:
    where = os.path.join(node.disk, "amberio", "quarantine")
    return len(os.listdir(where)) if os.path.isdir(where) else 0


def test_read_replaces_a_corrupted_part_mid_stream(cluster: FakeCluster) -> None:
    data = body(5 * PART + 123, 8)
    path = "bitrot/large"

    async def go() -> None:
        await cluster.write(path, data, on=IDS)
        corrupt(cluster["node-1"].part_file(path, 3), PART - 1)
        coord = coordinator(cluster, "node-1")
        assert await read_via(coord, path) == data
        assert quarantined(cluster["node-1"]) == 1
        corrupt(cluster["node-1"].part_file(path, 4), 7)
        assert await read_via(coord, path, f"bytes={PART + 5}-") == data[PART + 5 :]
        assert quarantined(cluster["node-1"]) == 2
        assert await cluster["node-1"].read(path) == data

    run(go())


# ---- the heal routes over HTTP (a real single node) --------------------------------------

AMBERIO = str(Path(sys.executable).with_name("amberio"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Http:
    def __init__(self, port: int) -> None:
        self.port = port

    def call(self, method: str, url: str, doc: Any = None, raw: bytes | None = None) -> Any:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            data = (
                raw if raw is not None else (json.dumps(doc).encode() if doc is not None else None)
            )
            conn.request(method, url, body=data)
            resp = conn.getresponse()
            payload = resp.read()
            return resp.status, json.loads(payload) if payload else None
        finally:
            conn.close()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Http]:
    data = tmp_path_factory.mktemp("heal-api")
    port = _free_port()
    proc = subprocess.Popen(
        [AMBERIO, "serve", "--data-dir", str(data), "--bind", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    srv = Http(port)
    deadline = time.monotonic() + 20
    while True:
        try:
            if srv.call("GET", "/health")[0] == 200:
                break
        except OSError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield srv
    finally:
        proc.terminate()
        proc.wait(15)


def slot_of(srv: Http, path: str) -> int:
    status, doc = srv.call(
        "GET", "/_/api/v1/slots/resolve?" + urllib.parse.urlencode({"path": path})
    )
    assert status == 200
    return int(doc["slot_id"])


def test_http_slotlets_and_heads(node: Http) -> None:
    path = "heal/http/a"
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=30)
    conn.request("PUT", "/_/api/v1/blobs/" + path, body=b"hello")
    assert conn.getresponse().status == 201
    conn.close()
    slot = slot_of(node, path)
    status, doc = node.call("GET", f"/internal/v1/slots/{slot}/heal/slotlets?prefix_len=2")
    assert status == 200 and doc["slot_id"] == slot and doc["prefix_len"] == 2
    prefix = heal.path_hash(path)[:2]
    let = next(s for s in doc["slotlets"] if s["prefix"] == prefix)
    assert let["objects"] >= 1
    status, heads = node.call(
        "POST", f"/internal/v1/slots/{slot}/heal/heads", {"prefixes": [prefix]}
    )
    assert status == 200 and heads["slot_id"] == slot
    mine = [h for h in heads["heads"] if h["path"] == path]
    assert len(mine) == 1 and mine[0]["head_kind"] == "meta" and mine[0]["generation"] == 1
    keys = [(h["path"], h["head_kind"], h["generation"], h["head_sha256"]) for h in heads["heads"]]
    assert (
        heal.digest([k for k in keys if heal.path_hash(k[0]).startswith(prefix)]) == let["digest"]
    )
    status, digests = node.call("POST", "/internal/v1/heal/slots", {"slots": [slot]})
    assert status == 200 and [d["slot_id"] for d in digests["slots"]] == [slot]


def test_http_slotlets_of_an_untouched_slot_creates_nothing(node: Http) -> None:
    status, doc = node.call("GET", "/internal/v1/slots/2047/heal/slotlets")
    assert status == 200 and doc == {"slot_id": 2047, "prefix_len": 2, "slotlets": []}


@pytest.mark.parametrize(
    ("method", "url", "raw"),
    [
        ("GET", "/internal/v1/slots/1/heal/slotlets?prefix_len=x", None),
        ("GET", "/internal/v1/slots/1/heal/slotlets?prefix_len=99", None),
        ("GET", "/internal/v1/slots/4096/heal/slotlets", None),
        ("POST", "/internal/v1/slots/1/heal/heads", b"{not json"),
        ("POST", "/internal/v1/slots/1/heal/heads", b'{"prefixes": ["zz"]}'),
        ("POST", "/internal/v1/slots/1/heal/heads", b'{"prefixes": "ab"}'),
        ("POST", "/internal/v1/slots/1/heal/repair", b"[]"),
        (
            "POST",
            "/internal/v1/slots/1/heal/repair",
            b'{"source_node_id": "nope", "blob_paths": []}',
        ),
        (
            "POST",
            "/internal/v1/slots/1/heal/repair",
            b'{"source_node_id": "node-1", "blob_paths": []}',
        ),
        ("POST", "/internal/v1/heal/slots", b'{"slots": [99999]}'),
    ],
)
def test_http_bad_heal_requests_are_400(
    node: Http, method: str, url: str, raw: bytes | None
) -> None:
    status, doc = node.call(method, url, raw=raw)
    assert status == 400, doc
    assert isinstance(doc["error"], str) and doc["error"] and doc["code"]


def test_http_repair_rejects_a_path_of_another_slot(node: Http) -> None:
    slot = slot_of(node, "some/path")
    status, doc = node.call(
        "POST",
        f"/internal/v1/slots/{(slot + 1) % 2048}/heal/repair",
        {"source_node_id": "node-1", "blob_paths": ["some/path"]},
    )
    assert status == 400 and doc["code"]


def test_http_wrong_method(node: Http) -> None:
    status, doc = node.call("GET", "/internal/v1/slots/1/heal/repair")
    assert status == 405 and doc["code"]


def test_gc_does_not_churn_the_open_database_set(cluster: FakeCluster) -> None:
    node = cluster["node-1"]
    for i in range(12):
        run(node.put(f"churn/{i}", b"x"))
    node.slots.close()  # nothing open now
    ae = node.anti_entropy()
    stats = run(ae.collect_garbage())
    assert stats.slots == len(node.slots.existing_slots()) > 1
    assert node.slots.open_dbs() == []


def test_anti_entropy_does_not_pull_back_a_tombstone_gc_compacted(cluster: FakeCluster) -> None:
    path = "old/tomb"

    async def go() -> None:
        await cluster.write(path, b"x", on=["node-1"])
        await cluster.delete(path, on=["node-1"])
        slot = cluster.placement.slot_of(path)
        old = Head.from_document(
            path,
            "tombstone",
            {"path": path, "generation": 9, "deleted": True, "updated_at": "2000-01-01T00:00:00Z"},
        )
        await cluster["node-1"].blobs.apply_head(slot, old)
        ae = cluster["node-2"].anti_entropy()
        stats = await ae.run_pass()
        assert stats.heads_pulled == 0 and stats.errors == 0
        assert cluster["node-2"].head(path) is None
        # A replica that still holds the blob takes the tombstone, however old.
        await cluster.write(path + "2", b"y", on=["node-1", "node-3"])
        await cluster["node-3"].put(path, b"stale")
        report = await cluster["node-3"].healer.repair(slot, "node-1", [path])
        assert report.heads_applied == 1
        head = cluster["node-3"].head(path)
        assert head is not None and head.deleted

    run(go())
