"""Quorum reads across a slot's replicas (contract §6, §7 LIST).

A read takes the winning head of `R - W + 1` replicas and serves its bytes from local
parts, fetching missing parts from a replica that holds the winner (read-through), or from
the archive (§10.3); a local part that fails verification is fetched again. A node that
holds no replica of the slot streams the range from one that does. LIST merges the index
pages of enough nodes to see every acknowledged write.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import msgspec

from amberio.cluster.peers import PeerError
from amberio.cluster.quorum import QuorumBase
from amberio.errors import NotFound, Unavailable
from amberio.storage.blobs import (
    READ_CHUNK,
    ReadPlan,
)
from amberio.storage.heads import Head, winner
from amberio.storage.index import IndexEntry
from amberio.storage.ranges import ByteRange

log = logging.getLogger("amberio.cluster.reads")

MAX_STREAM_REFETCHES = 4
"""Parts a streaming read may fetch again after the response started (bad local copies)."""


class ReadPath(QuorumBase):
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
                    plan.meta.archive_url,
                    offset,
                    end,
                    etag if isinstance(etag, str) else None,
                    plan.meta.size_bytes,
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
