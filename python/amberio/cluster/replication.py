"""Quorum writes and reads across a slot's replicas (contract §6).

Any node coordinates any request. A write picks `1 + max(generation)` from a read quorum
of heads, cuts the body into parts, copies the parts to every live replica, commits the
head on all of them in parallel and answers once W replicas committed; when fewer than W
commit, the head is aborted where it was applied. A read takes the winning head of
`R - W + 1` replicas and serves its bytes from local parts, fetching missing parts from a
replica that holds the winner (read-through).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import msgspec

from amberio.cluster import replay
from amberio.cluster.peers import PeerError, Peers
from amberio.cluster.placement import Placement
from amberio.cluster.registry import Registry
from amberio.core import PartInfo, PartWriter
from amberio.errors import NotFound, QuorumNotReached, Unavailable, WriteIdConflict
from amberio.storage import layout
from amberio.storage.blobs import (
    READ_CHUNK,
    BlobStore,
    DeleteResult,
    PutResult,
    ReadPlan,
    check_write_id,
    meta_document,
    new_parts,
    tombstone_document,
)
from amberio.storage.heads import Head, winner
from amberio.storage.index import IndexEntry
from amberio.storage.ranges import ByteRange

log = logging.getLogger("amberio.cluster.replication")

T = TypeVar("T")
LIVENESS_REFRESH_SECONDS = 1.0
MAX_STREAM_REFETCHES = 4
"""Parts a streaming read may fetch again after the response started (bad local copies)."""


class Coordinator:
    def __init__(
        self,
        *,
        node_id: str,
        placement: Placement,
        blobs: BlobStore,
        peers: Peers,
        registry: Registry,
        read_consistency: str = "quorum",
    ) -> None:
        self.node_id = node_id
        self.placement = placement
        self.blobs = blobs
        self.peers = peers
        self.registry = registry
        self.read_consistency = read_consistency
        self._alive: set[str] = set(placement.node_ids)
        self._reserved: dict[str, int] = {}
        self._background: set[asyncio.Future[Any]] = set()
        self._holds_every_slot = len(placement.slots_of(node_id)) == placement.total_slots

    # ---- liveness ------------------------------------------------------------------

    async def refresh_liveness(self) -> None:
        try:
            live = await self.registry.live_nodes()
        except Exception as exc:
            log.debug("liveness refresh failed: %s", exc)
            return
        self._alive = set(live) | {self.node_id}

    async def watch_liveness(self, stop: asyncio.Event) -> None:
        """Refresh the set of live nodes from the registry's heartbeats."""
        while not stop.is_set():
            await self.refresh_liveness()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=LIVENESS_REFRESH_SECONDS)

    async def _live(self, replicas: list[str], need: int) -> list[str]:
        """Replicas believed alive; asks the registry again before giving up on fewer
        than `need` (a peer that just started may not be in the last refresh yet)."""
        alive = [r for r in replicas if self.alive(r)]
        if len(alive) < need:
            await self.refresh_liveness()
            alive = [r for r in replicas if self.alive(r)]
        return alive

    def alive(self, node_id: str) -> bool:
        return node_id == self.node_id or node_id in self._alive

    def _mark_down(self, err: PeerError) -> None:
        if err.status is None:  # no answer at all: skip it until its heartbeat says otherwise
            self._alive.discard(err.node_id)

    async def _gather(
        self,
        calls: list[tuple[str, Awaitable[T]]],
        need: int,
        *,
        keep_running: bool = False,
    ) -> list[tuple[str, T | BaseException]]:
        """Run `calls` concurrently; return once all finished, or the slow-peer grace
        (`peers.slow_peer_grace_seconds`) after `need` of them succeeded, so one slow or
        hung peer never holds a request that a quorum already answered. Unfinished calls
        are cancelled, or with `keep_running` left to finish in the background (commits
        still land there)."""
        loop = asyncio.get_running_loop()
        tasks: dict[asyncio.Future[T], str] = {
            asyncio.ensure_future(aw): node for node, aw in calls
        }
        pending: set[asyncio.Future[T]] = set(tasks)
        results: list[tuple[str, T | BaseException]] = []
        successes = 0
        grace_ends: float | None = None
        while pending:
            timeout = None if grace_ends is None else max(0.0, grace_ends - loop.time())
            done, pending = await asyncio.wait(
                pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                break
            for task in done:
                error = task.exception()
                results.append((tasks[task], error if error is not None else task.result()))
                successes += error is None
            if grace_ends is None and successes >= need:
                grace_ends = loop.time() + self.peers.settings.slow_peer_grace_seconds
        for task in pending:
            log.warning("node %s is slow to answer; going on without it", tasks[task])
            if keep_running:
                self._background.add(task)
                task.add_done_callback(self._background.discard)
            else:
                task.cancel()
        return results

    def _single(self, replicas: list[str]) -> bool:
        return replicas == [self.node_id]

    # ---- heads from a quorum -------------------------------------------------------

    async def _on(
        self, node_id: str, local: Callable[[], Awaitable[T]], remote: Callable[[], Awaitable[T]]
    ) -> T:
        return await (local() if node_id == self.node_id else remote())

    async def _heads(
        self, slot_id: int, path: str, replicas: list[str], want: int
    ) -> list[tuple[str, Head | None]]:
        """Heads of `path` from every live replica; at least `want` must answer."""

        async def local() -> Head | None:
            return self.blobs.head_of(path)[1]

        def remote(node: str) -> Callable[[], Awaitable[Head | None]]:
            return lambda: self.peers.get_head(node, slot_id, path)

        asked = await self._live(replicas, want)
        results = await self._gather([(r, self._on(r, local, remote(r))) for r in asked], want)
        answers: list[tuple[str, Head | None]] = []
        for attempt in range(2):
            for node, result in results:
                if isinstance(result, PeerError):
                    self._mark_down(result)
                    log.warning("reading the head of %r: %s", path, result)
                elif isinstance(result, BaseException):
                    raise result
                else:
                    answers.append((node, result))
            if len(answers) >= want or attempt:
                break
            # Too few answers: the live set may be stale (a peer that just started, or
            # one that just stopped); ask the registry and try the replicas not yet asked.
            await self.refresh_liveness()
            more = [r for r in replicas if r not in asked and self.alive(r)]
            if not more:
                break
            asked += more
            results = await self._gather(
                [(r, self._on(r, local, remote(r))) for r in more], want - len(answers)
            )
        if len(answers) < want:
            raise QuorumNotReached(
                f"read the head of {path!r} from {len(answers)} of {len(replicas)} replicas; "
                f"{want} needed"
            )
        return answers

    # ---- PUT -----------------------------------------------------------------------

    async def put(
        self,
        path: str,
        body: AsyncIterable[bytes],
        *,
        content_length: int | None,
        write_id: str | None,
        content_type: str | None,
        extra: dict[str, Any] | None = None,
    ) -> PutResult:
        if self._single(self.placement.replicas(self.placement.slot_of(path))):
            return await self.blobs.put(
                path,
                body,
                content_length=content_length,
                write_id=write_id,
                content_type=content_type,
                extra=extra,
            )
        async with self.blobs.inflight.claim(path, write_id):
            return await self._put(
                path,
                body,
                content_length=content_length,
                write_id=write_id,
                content_type=content_type,
                extra=extra,
            )

    async def delete(self, path: str, *, write_id: str | None) -> DeleteResult:
        if self._single(self.placement.replicas(self.placement.slot_of(path))):
            return await self.blobs.delete(path, write_id=write_id)
        async with self.blobs.inflight.claim(path, write_id):
            return await self._delete(path, write_id=write_id)

    async def _put(
        self,
        path: str,
        body: AsyncIterable[bytes],
        *,
        content_length: int | None,
        write_id: str | None,
        content_type: str | None,
        extra: dict[str, Any] | None = None,
    ) -> PutResult:
        slot_id = self.placement.slot_of(path)
        replicas = self.placement.replicas(slot_id)
        quorum = self.placement.write_quorum
        await self._refuse_below_quorum(slot_id, replicas, quorum)
        if write_id is not None:
            check_write_id(write_id)
            found = await replay.find_write(self, slot_id, path, replicas, write_id)
            if found is not None:
                # The body must be the original's (else 409) before anything is completed.
                result = await self.blobs.replay_put(
                    path, slot_id, found.record, body, content_length
                )
                held = await replay.confirm_write(self, slot_id, path, replicas, found)
                return msgspec.structs.replace(result, committed_replicas=held)
        else:
            write_id = uuid.uuid4().hex
        # The generation comes from the heads of the live replicas, at least W of them:
        # a write that W replicas can take is not refused for want of a read quorum.
        heads = await self._heads(slot_id, path, replicas, quorum)
        generation = self._reserve(path, heads)
        local = self.node_id in replicas
        slot_dir = self.blobs.slots.slot_dir(slot_id)
        tmp = self.blobs.slots.tmp_dir(slot_id)
        staging = None if local else os.path.join(tmp, f"stage-{uuid.uuid4().hex}")
        directory = (
            layout.generation_dir(slot_dir, path, generation) if staging is None else staging
        )
        writer = PartWriter(directory, tmp, self.blobs.part_size)
        committed_locally = False
        # Parts go to the other replicas as soon as they are sealed, while the rest of the
        # body is still being cut: one queue and one sender per live remote replica.
        remotes = [r for r in replicas if r != self.node_id and self.alive(r)]
        queues: dict[str, asyncio.Queue[PartInfo | None]] = {r: asyncio.Queue() for r in remotes}
        senders = {
            r: asyncio.ensure_future(self._send_queued(r, slot_id, path, generation, queues[r]))
            for r in remotes
        }
        queued = 0

        def enqueue_sealed() -> None:
            nonlocal queued
            for part in writer.sealed_parts(queued):
                for queue in queues.values():
                    queue.put_nowait(part)
                queued += 1

        def feed(chunk: bytes) -> bool:
            full = writer.feed(chunk)
            enqueue_sealed()
            return full

        try:
            await self.blobs.receive_body(body, content_length, feed, writer.flush)
            written = await self.blobs.run(writer.finish)
            enqueue_sealed()
            for queue in queues.values():
                queue.put_nowait(None)
            extra = await self.blobs.archive_write(path, generation, write_id, written, extra)
            document = meta_document(
                path,
                slot_id=slot_id,
                generation=generation,
                written=written,
                part_size=self.blobs.part_size,
                write_id=write_id,
                content_type=content_type,
                extra=extra,
            )
            head = Head.from_document(path, "meta", document)
            sent = await self._gather(
                [(r, senders[r]) for r in remotes], quorum - (1 if local else 0)
            )
            holders = [r for r, ok in sent if ok is True]
            if local:
                holders.insert(0, self.node_id)
            if len(holders) < quorum:
                raise QuorumNotReached(
                    f"parts of {path!r} reached {len(holders)} replicas; W={quorum}"
                )
            acks = await self._commit_heads(slot_id, head, holders, written)
            committed_locally = self.node_id in acks
            if len(acks) < quorum:
                await self._abort(slot_id, head, acks)
                committed_locally = False
                raise QuorumNotReached(
                    f"the head of {path!r} was committed on {len(acks)} replicas; W={quorum}"
                )
            return PutResult(
                path=path,
                slot_id=slot_id,
                generation=generation,
                etag=written.md5,
                size_bytes=written.size,
                committed_replicas=len(acks),
            )
        except BaseException:
            if not committed_locally:
                writer.abort()
            raise
        finally:
            for sender in senders.values():
                sender.cancel()
            self._release(path, generation)
            if staging is not None:
                await self.blobs.run(shutil.rmtree, staging, True)

    async def _refuse_below_quorum(self, slot_id: int, replicas: list[str], quorum: int) -> None:
        alive = await self._live(replicas, quorum)
        if len(alive) < quorum:
            raise QuorumNotReached(
                f"only {len(alive)} of the {len(replicas)} replicas of slot {slot_id} are "
                f"alive ({', '.join(alive) or 'none'}); W={quorum}"
            )

    def _reserve(self, path: str, heads: list[tuple[str, Head | None]]) -> int:
        highest = max((h.generation for _, h in heads if h is not None), default=0)
        generation = max(highest, self._reserved.get(path, 0)) + 1
        self._reserved[path] = generation
        return generation

    def _release(self, path: str, generation: int) -> None:
        if self._reserved.get(path) == generation:
            del self._reserved[path]

    async def _send_queued(
        self,
        node: str,
        slot_id: int,
        path: str,
        generation: int,
        queue: asyncio.Queue[PartInfo | None],
    ) -> bool:
        """Send the parts put on `queue` (until None) to `node`; False if one failed."""
        while (part := await queue.get()) is not None:
            try:
                await self.peers.put_part(
                    node,
                    slot_id,
                    path,
                    generation,
                    part.part_no,
                    part.sha256,
                    part.path,
                    part.size,
                )
            except PeerError as err:
                self._mark_down(err)
                log.warning("copying parts of %r to %s failed: %s", path, node, err)
                return False
        return True

    async def _commit_heads(
        self, slot_id: int, head: Head, holders: list[str], written: Any = None
    ) -> list[str]:
        """Commit `head` on `holders` in parallel; the nodes that hold it afterwards."""

        async def local() -> bool:
            db = self.blobs.slots.db(slot_id)
            parts = new_parts(written) if written is not None else []
            record = self.blobs.write_record_for(head)
            return await self.blobs.run(self.blobs.commit, db, head, parts, record)

        def remote(node: str) -> Callable[[], Awaitable[bool]]:
            return lambda: self.peers.put_head(node, slot_id, head)

        results = await self._gather(
            [(n, self._on(n, local, remote(n))) for n in holders],
            self.placement.write_quorum,
            keep_running=True,
        )
        acks: list[str] = []
        for node, result in results:
            if isinstance(result, PeerError):
                self._mark_down(result)
                log.warning(
                    "committing the head of %r on %s failed: %s", head.blob_path, node, result
                )
            elif isinstance(result, BaseException):
                log.error(
                    "committing the head of %r on %s failed: %r", head.blob_path, node, result
                )
            else:
                # Not applied means a newer head already won there: durable all the same.
                acks.append(node)
        return acks

    async def _abort(self, slot_id: int, head: Head, nodes: list[str]) -> None:
        async def local() -> bool:
            return await self.blobs.abort_head(
                slot_id, head.blob_path, head.generation, head.head_sha256
            )

        def remote(node: str) -> Callable[[], Awaitable[bool]]:
            return lambda: self.peers.abort_head(node, slot_id, head)

        results = await asyncio.gather(
            *(self._on(n, local, remote(n)) for n in nodes), return_exceptions=True
        )
        for node, result in zip(nodes, results, strict=True):
            if isinstance(result, BaseException):
                log.warning(
                    "abort of %r generation %d on %s failed: %s",
                    head.blob_path,
                    head.generation,
                    node,
                    result,
                )

    # ---- DELETE --------------------------------------------------------------------

    async def _delete(self, path: str, *, write_id: str | None) -> DeleteResult:
        slot_id = self.placement.slot_of(path)
        replicas = self.placement.replicas(slot_id)
        quorum = self.placement.write_quorum
        await self._refuse_below_quorum(slot_id, replicas, quorum)
        if write_id is not None:
            check_write_id(write_id)
            found = await replay.find_write(self, slot_id, path, replicas, write_id)
            if found is not None:
                if found.record.head_kind != "tombstone":
                    raise WriteIdConflict(
                        f"write id {write_id!r} was already used for a PUT of {path!r}"
                    )
                await replay.confirm_write(self, slot_id, path, replicas, found)
                return DeleteResult(
                    path=path, generation=found.record.generation, idempotent_replay=True
                )
        else:
            write_id = uuid.uuid4().hex
        # The generation comes from the heads of the live replicas, at least W of them:
        # a write that W replicas can take is not refused for want of a read quorum.
        heads = await self._heads(slot_id, path, replicas, quorum)
        current = winner([h for _, h in heads if h is not None])
        if current is None or current.deleted:
            raise NotFound(f"blob {path!r} not found")
        generation = self._reserve(path, heads)
        try:
            head = Head.from_document(
                path,
                "tombstone",
                tombstone_document(path, slot_id=slot_id, generation=generation, write_id=write_id),
            )
            holders = [r for r in replicas if self.alive(r)]
            acks = await self._commit_heads(slot_id, head, holders)
            if len(acks) < quorum:
                await self._abort(slot_id, head, acks)
                raise QuorumNotReached(
                    f"the delete of {path!r} was committed on {len(acks)} replicas; W={quorum}"
                )
            await self.blobs.archive_forget(current)
            return DeleteResult(path=path, generation=generation)
        finally:
            self._release(path, generation)

    # ---- GET / HEAD ----------------------------------------------------------------

    async def plan_read(self, path: str, range_header: str | None) -> ReadPlan:
        slot_id = self.placement.slot_of(path)
        replicas = self.placement.replicas(slot_id)
        if self._single(replicas) or (
            self.read_consistency == "local" and self.node_id in replicas
        ):
            return self.blobs.plan_read(path, range_header)
        heads = await self._heads(slot_id, path, replicas, self.placement.read_quorum)
        best = winner([h for _, h in heads if h is not None])
        if best is None or best.deleted:
            raise NotFound(f"blob {path!r} not found")
        meta = best.meta()
        byte_range = ByteRange.parse(range_header, meta.size_bytes)
        plan = ReadPlan(slot_id=slot_id, head=best, meta=meta, range=byte_range)
        plan.sources = [n for n, h in heads if h is not None and h.rank == best.rank]
        return plan

    async def open_stream(self, plan: ReadPlan) -> AsyncIterator[bytes]:
        """Verified bytes of the plan, from local parts; parts this node lacks are fetched
        from a replica holding the winning head and stored here first (read-through)."""
        replicas = self.placement.replicas(plan.slot_id)
        if plan.length == 0 or self._single(replicas):
            return await self.blobs.open_stream(plan)
        if self.node_id not in replicas:
            return self._proxy(plan)
        await self._materialize(plan)
        try:
            stream = await self.blobs.open_stream(plan)
        except Unavailable as exc:
            # A local part failed verification (BlobStore quarantined it) or its file is
            # gone: fetch it again from a replica holding the winning head, retry once.
            log.warning("read of %r: %s; fetching from a replica", plan.head.blob_path, exc)
            await self._refetch(plan)
            stream = await self.blobs.open_stream(plan)
        if plan.length <= READ_CHUNK and len(self._needed_parts(plan)) == 1:
            return stream  # the first chunk, read and verified above, is all of it
        return self._healing_stream(plan, stream)

    async def _refetch(self, plan: ReadPlan) -> None:
        """Fetch the parts of `plan` missing here (quarantined ones included) from a
        replica holding the same head; other replicas are asked when the plan knows none."""
        sources = [s for s in plan.sources if s != self.node_id]
        if not sources:
            others = [r for r in self.placement.replicas(plan.slot_id) if r != self.node_id]
            heads = await asyncio.gather(
                *(self.peers.get_head(r, plan.slot_id, plan.head.blob_path) for r in others),
                return_exceptions=True,
            )
            sources = [
                r
                for r, h in zip(others, heads, strict=True)
                if isinstance(h, Head) and h.rank == plan.head.rank
            ]
        await self._materialize(msgspec.structs.replace(plan, sources=sources))

    async def _healing_stream(
        self, plan: ReadPlan, stream: AsyncIterator[bytes]
    ) -> AsyncIterator[bytes]:
        """`stream`, continued from a replica's copy when a local part fails verification
        (or vanishes) after the response started: the bad part is fetched again and the
        rest of the range is read from the fresh copy (once per part, at most a few)."""
        sent = 0
        retries = 0
        while True:
            try:
                async for chunk in stream:
                    sent += len(chunk)
                    yield chunk
                return
            except Unavailable as exc:
                retries += 1
                if retries > MAX_STREAM_REFETCHES:
                    raise
                rest = msgspec.structs.replace(
                    plan,
                    range=ByteRange(
                        plan.start + sent, plan.start + plan.length - 1, plan.meta.size_bytes
                    ),
                )
                log.warning(
                    "read of %r failed after %d bytes: %s; fetching from a replica",
                    plan.head.blob_path,
                    sent,
                    exc,
                )
                await self._refetch(rest)
                stream = await self.blobs.open_stream(rest)

    def _needed_parts(self, plan: ReadPlan) -> range:
        part_size = plan.meta.part_size
        return range(plan.start // part_size, (plan.start + plan.length - 1) // part_size + 1)

    async def _materialize(self, plan: ReadPlan) -> None:
        path, generation = plan.head.blob_path, plan.meta.generation
        present = self.blobs.present_parts(plan.slot_id, path, generation)
        missing = [n for n in self._needed_parts(plan) if n not in present]
        local_head = self.blobs.head_of(path)[1]
        archive_error: Unavailable | None = None
        if missing and plan.meta.archive_url:
            # §10.3: the archive (exactly the parts' ranges) before the replicas.
            try:
                missing = await self.blobs.archive_fill(plan, first_only=True)
            except Unavailable as exc:
                if not [s for s in plan.sources if s != self.node_id]:
                    raise
                archive_error = exc
                log.warning("read of %r from the archive: %s; trying replicas", path, exc)
        if missing:
            try:
                await self._fetch_parts(plan, missing)
            except Unavailable as exc:
                if archive_error is None:
                    raise
                raise Unavailable(f"{archive_error}; {exc}") from None
        if local_head is None or plan.head.beats(local_head):
            # Read repair: this replica missed the winning head.
            await self.blobs.apply_head(plan.slot_id, plan.head)

    async def _fetch_parts(self, plan: ReadPlan, missing: list[int]) -> None:
        path, generation = plan.head.blob_path, plan.meta.generation
        errors: list[str] = []
        for source in [s for s in plan.sources if s != self.node_id]:
            try:
                listing = {
                    p.part_no: p
                    for p in await self.peers.list_parts(source, plan.slot_id, path, generation)
                }
                for part_no in list(missing):
                    entry = listing.get(part_no)
                    if entry is None:
                        continue
                    await self.blobs.store_part(
                        plan.slot_id,
                        path,
                        generation=generation,
                        part_no=part_no,
                        sha256=entry.sha256,
                        body=self.peers.get_part(
                            source, plan.slot_id, path, generation, part_no, entry.sha256
                        ),
                        content_length=entry.size_bytes,
                    )
                    missing.remove(part_no)
                if not missing:
                    return
            except (PeerError, Exception) as exc:  # try the next source
                if isinstance(exc, PeerError):
                    self._mark_down(exc)
                errors.append(str(exc))
        raise Unavailable(
            f"parts {missing} of {path!r} generation {generation} are not on this node and "
            f"no replica could supply them ({'; '.join(errors) or 'no source holds them'})"
        )

    async def _proxy(self, plan: ReadPlan) -> AsyncIterator[bytes]:
        """This node holds no replica of the slot: stream the range from a replica."""
        path, generation = plan.head.blob_path, plan.meta.generation
        part_size = plan.meta.part_size
        sources = [s for s in plan.sources if s != self.node_id]
        if not sources:
            raise Unavailable(f"no replica of {path!r} answered")
        source = sources[0]
        listing = {
            p.part_no: p
            for p in await self.peers.list_parts(source, plan.slot_id, path, generation)
        }
        remaining = plan.length
        offset = plan.start
        for part_no in self._needed_parts(plan):
            entry = listing.get(part_no)
            if entry is None and plan.meta.archive_url:
                # No replica holds this part yet: its range straight from the archive (§10.3).
                end = min((part_no + 1) * part_size, plan.start + plan.length)
                etag = plan.head.document.get("archive_etag")
                async for piece in self.blobs.archive_range(
                    plan.meta.archive_url, offset, end, etag if isinstance(etag, str) else None
                ):
                    remaining -= len(piece)
                    offset += len(piece)
                    yield piece
                continue
            if entry is None:
                raise Unavailable(f"part {part_no} of {path!r} is missing on {source}")
            skip = offset - part_no * part_size
            async for chunk in self.peers.get_part(
                source, plan.slot_id, path, generation, part_no, entry.sha256
            ):
                if skip >= len(chunk):
                    skip -= len(chunk)
                    continue
                piece = chunk[skip : skip + remaining]
                skip = 0
                remaining -= len(piece)
                offset += len(piece)
                yield piece
                if remaining == 0:
                    return

    # ---- LIST ----------------------------------------------------------------------

    async def list_blobs(
        self, prefix: str, after: str | None, limit: int, include_deleted: bool
    ) -> list[IndexEntry]:
        """Up to `limit` entries in path order across the whole cluster (§7).

        Pages of several nodes' indexes are merged: per path the highest generation wins
        (a tombstone over a meta of the same generation), and a page is cut where the
        shortest full page ends, so nothing past that point can be missing. A node that
        holds every slot merges its own index with those of `R - W + 1 - 1` other live
        nodes, so every acknowledged write is seen (as for GET); with `read_consistency:
        local`, or alone, it answers from its own index. Otherwise every live node is asked.
        """
        if self._holds_every_slot:
            others = [n for n in self.placement.node_ids if n != self.node_id and self.alive(n)]
            wanted = self.placement.read_quorum - 1
            if self.read_consistency == "local" or wanted <= 0 or not others:
                return self.blobs.list(prefix, after, limit, include_deleted)
            nodes = [self.node_id, *others[:wanted]]
        else:
            nodes = [n for n in self.placement.node_ids if self.alive(n)]
        found: list[IndexEntry] = []
        cursor = after
        while len(found) < limit:
            pages = await asyncio.gather(
                *(self._index_page(n, prefix, cursor, limit) for n in nodes),
                return_exceptions=True,
            )
            merged: dict[str, IndexEntry] = {}
            boundary: str | None = None
            for node, page in zip(nodes, pages, strict=True):
                if isinstance(page, BaseException):
                    log.warning("listing the index of %s failed: %s", node, page)
                    continue
                if len(page) >= limit and page:
                    last = page[-1].path
                    boundary = last if boundary is None else min(boundary, last)
                for entry in page:
                    best = merged.get(entry.path)
                    if best is None or (entry.generation, entry.deleted) > (
                        best.generation,
                        best.deleted,
                    ):
                        merged[entry.path] = entry
            paths = sorted(p for p in merged if boundary is None or p <= boundary)
            found.extend(merged[p] for p in paths if include_deleted or not merged[p].deleted)
            if boundary is None:
                break
            cursor = boundary
        return found[:limit]

    async def _index_page(
        self, node: str, prefix: str, after: str | None, limit: int
    ) -> list[IndexEntry]:
        if node == self.node_id:
            return self.blobs.list(prefix, after, limit, True)
        return await self.peers.list_index(node, prefix, after, limit)
