"""Replay of a retried write across replicas (contract §6 idempotency).

A write-id record travels with its head: every replica that committed the head (or was
sent it while a newer head already won there) keeps `(path, write id) -> generation, etag,
body sha256`. A record alone does not say that its write reached W replicas: a write that
failed with 503 can leave its head and record on one replica (its abort only removes the
head where it is still the head). So a retry is answered as a replay only once W replicas
hold the record (`tla/AmberioWrite.tla`, "Replays", models this rule):

1. The records of the write id are read from the live replicas (at least W must answer, as
   for the heads a new write's generation comes from).
2. W or more hold it: replay at once (200, the original generation and etag,
   `committed_replicas` = the replicas that hold it).
3. Fewer: the write is completed first if its head is still the winner of the heads read
   from W live replicas. Each live replica without the record pulls the head and its parts
   from a replica that holds them (the heal machinery, parts verified before the head), and
   is sent the head, which stores the record. Once W replicas hold it: the replay answers.
4. Otherwise (the head is gone or was superseded, or too few replicas took it): 503. The
   original write failed or went unanswered, and its outcome stays unknown (§6): a record
   held by replicas that are down now may still be found later, so the write id is not
   reused for a new write either.

A retry that finds no record at all is a new write (the original never committed anywhere
that answered).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import msgspec

from amberio.cluster.heal import Healer, RepairReport
from amberio.cluster.peers import INTERNAL, PeerError
from amberio.errors import QuorumNotReached
from amberio.storage.heads import Head, winner
from amberio.storage.metadata import WriteRecord

if TYPE_CHECKING:
    from amberio.cluster.quorum import QuorumBase

log = logging.getLogger("amberio.cluster.replay")

_json = msgspec.json.Encoder()
_repair_answer = msgspec.json.Decoder(RepairReport)

RecordKey = tuple[str, int, str, int, str]


class FoundWrite(msgspec.Struct, kw_only=True):
    """A write-id record and the replicas that hold it."""

    record: WriteRecord
    holders: list[str]


def _key(record: WriteRecord) -> RecordKey:
    return (
        record.head_kind,
        record.generation,
        record.etag,
        record.size_bytes,
        record.body_sha256,
    )


def is_head_of(head: Head, record: WriteRecord) -> bool:
    """True when `head` is the head the write of `record` produced."""
    return (
        head.head_kind == record.head_kind
        and head.generation == record.generation
        and head.document.get("write_id") == record.write_id
    )


async def find_write(
    coord: QuorumBase, slot_id: int, path: str, replicas: list[str], write_id: str
) -> FoundWrite | None:
    """The write-id record of `write_id` and its holders among the live replicas; None
    when no replica that answered holds one. Raises QuorumNotReached when fewer than W
    replicas answered: like the heads a write's generation comes from, the records are read
    from at least W live replicas (W + W > R for the usual W = 2 of 3, so a write held by W
    replicas is found; with W = 1 a write is not refused for want of more)."""
    quorum = coord.placement.write_quorum

    async def local() -> WriteRecord | None:
        return coord.blobs.write_record(slot_id, path, write_id)

    def remote(node: str) -> Callable[[], Awaitable[WriteRecord | None]]:
        async def call() -> WriteRecord | None:
            found = await coord.peers.write_record(node, slot_id, path, write_id)
            return None if found is None else msgspec.convert(found, WriteRecord)

        return call

    asked = await coord._live(replicas, quorum)
    results = await coord._gather([(r, coord._on(r, local, remote(r))) for r in asked], quorum)
    answered = 0
    groups: dict[RecordKey, FoundWrite] = {}
    for node, result in results:
        if isinstance(result, PeerError):
            coord._mark_down(result)
            continue
        if isinstance(result, BaseException):
            raise result
        answered += 1
        if result is not None:
            group = groups.setdefault(_key(result), FoundWrite(record=result, holders=[]))
            group.holders.append(node)
    if not groups and answered < quorum:
        raise QuorumNotReached(
            f"looked for write id {write_id!r} of {path!r} on {answered} of {len(replicas)} "
            f"replicas; {quorum} needed"
        )
    if not groups:
        return None
    # One write id has one record; should replicas disagree, the best-held one answers.
    return max(groups.values(), key=lambda g: (len(g.holders), g.record.generation))


async def confirm_write(
    coord: QuorumBase, slot_id: int, path: str, replicas: list[str], found: FoundWrite
) -> int:
    """Make sure W replicas hold the write of `found` (completing it when its head is
    still the winner); returns how many hold it. Raises QuorumNotReached otherwise."""
    quorum = coord.placement.write_quorum
    record = found.record
    if len(found.holders) >= quorum:
        return len(found.holders)
    heads = await coord._heads(slot_id, path, replicas, quorum)
    best = winner([h for _, h in heads if h is not None])
    if best is None or not is_head_of(best, record):
        raise QuorumNotReached(
            f"write id {record.write_id!r} of {path!r} (generation {record.generation}) is "
            f"held by {len(found.holders)} of {len(replicas)} replicas, fewer than W={quorum}, "
            "and is no longer the head: that write did not complete and its outcome stays "
            "unknown (a new write needs a new write id)"
        )
    sources = [n for n, h in heads if h is not None and h.rank == best.rank]
    targets = [r for r in await coord._live(replicas, quorum) if r not in found.holders]
    results = await coord._gather(
        [(t, _complete_on(coord, slot_id, best, t, sources)) for t in targets],
        quorum - len(found.holders),
        keep_running=True,
    )
    holders = list(found.holders)
    for node, result in results:
        if result is True:
            holders.append(node)
        elif isinstance(result, BaseException):
            if isinstance(result, PeerError):
                coord._mark_down(result)
            log.warning("completing the write of %r on %s for a replay: %s", path, node, result)
    if len(holders) < quorum:
        raise QuorumNotReached(
            f"write id {record.write_id!r} of {path!r} (generation {record.generation}) is "
            f"held by {len(holders)} replicas after completing it; W={quorum}"
        )
    return len(holders)


async def _complete_on(
    coord: QuorumBase, slot_id: int, head: Head, target: str, sources: list[str]
) -> bool:
    """`target` gets `head` (its parts first, from a source) and with it the write-id
    record. True when the record is stored there."""
    path = head.blob_path
    if target not in sources and head.head_kind == "meta":
        source = coord.node_id if coord.node_id in sources else sources[0]
        report = await _pull(coord, slot_id, path, target, source)
        if report.errors or report.repaired_objects != 1:
            # The source's head moved on, or the target's head wins: its parts are not here.
            problem = "; ".join(e.error for e in report.errors) or "not in sync with the source"
            raise QuorumNotReached(f"pulling {path!r} from {source} onto {target}: {problem}")

    async def local() -> bool:
        await coord.blobs.apply_head(slot_id, head)
        return True

    async def remote() -> bool:
        await coord.peers.put_head(target, slot_id, head)
        return True

    # Applied, or a newer head already won there: either way the record is stored now.
    return await coord._on(target, local, remote)


async def _pull(
    coord: QuorumBase, slot_id: int, path: str, target: str, source: str
) -> RepairReport:
    """`target` pulls the head of `path` and its missing parts from `source`."""
    if target == coord.node_id:
        healer = Healer(
            node_id=coord.node_id, placement=coord.placement, blobs=coord.blobs, peers=coord.peers
        )
        return await healer.repair(slot_id, source, [path])
    status, data = await coord.peers.call(
        target,
        "POST",
        f"{INTERNAL}/slots/{slot_id}/heal/repair",
        {},
        body=_json.encode({"source_node_id": source, "blob_paths": [path]}),
        deadline_seconds=coord.peers.settings.part_timeout_seconds,
    )
    if status != 200:
        raise PeerError(target, f"heal/repair: HTTP {status} {data[:200]!r}", status)
    return _repair_answer.decode(data)
