"""Quorum writes across a slot's replicas (contract §6); `Coordinator` coordinates every
request (reads in `reads.py`, liveness and quorum steps in `quorum.py`).

Any node coordinates any request. A write picks `1 + max(generation)` from the heads of at
least W live replicas, cuts the body into parts, copies the parts to every live replica,
commits the head on all of them in parallel and answers once W replicas committed; when
fewer than W commit, the head is aborted where it was applied. A retry with a write id is
answered from its write-id record once W replicas hold it (`replay.py`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import uuid
from collections.abc import AsyncIterable, Awaitable, Callable
from typing import Any

import msgspec

from amberio.cluster import replay
from amberio.cluster.peers import PeerError
from amberio.cluster.reads import ReadPath
from amberio.core import PartInfo, PartWriter
from amberio.errors import NotFound, QuorumNotReached, WriteIdConflict
from amberio.storage import layout
from amberio.storage.blobs import (
    DeleteResult,
    PutResult,
    check_write_id,
    meta_document,
    new_parts,
    tombstone_document,
)
from amberio.storage.heads import Head, winner

log = logging.getLogger("amberio.cluster.replication")


class Coordinator(ReadPath):
    """Coordinates any request for any path (§4): PUT and DELETE here, GET/HEAD/LIST in
    `ReadPath`, liveness and quorum steps in `QuorumBase`."""

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
