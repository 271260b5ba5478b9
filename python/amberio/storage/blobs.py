"""Blob operations on this node's own storage: PUT, GET (verified ranges), DELETE, LIST.

Bytes go through the Rust core (`PartWriter`, `RangeReader`) in worker threads; SQLite
commits (fsync) run there too, so the event loop never waits on a disk flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from amberio.core import (
    IntegrityError,
    ObjectHasher,
    PartInfo,
    PartRef,
    PartWriter,
    RangeReader,
    WrittenObject,
)
from amberio.errors import (
    BadRequest,
    DataCorrupted,
    IncompleteBody,
    NotFound,
    Unavailable,
    WriteIdConflict,
)
from amberio.storage import archive, layout
from amberio.storage.archive import Archives
from amberio.storage.heads import BlobMeta, Head, now_rfc3339
from amberio.storage.index import IndexEntry, NodeIndex
from amberio.storage.metadata import NewPart, PartRow, SlotDb, WriteRecord
from amberio.storage.ranges import ByteRange
from amberio.storage.slots import SlotStore

if TYPE_CHECKING:
    from amberio.storage.cache import LocalCache

log = logging.getLogger("amberio.storage")

T = TypeVar("T")

INLINE_READ_LIMIT = 256 * 1024
"""Reads up to this size run on the event loop; larger ones chunk by chunk in workers."""
READ_CHUNK = 192 * 1024
"""Bytes one read step verifies and hands to the response (three 64 KiB CRC blocks).

Small enough to bound memory (64 concurrent 64 MiB GETs peaked at 183 MiB RSS with 256 KiB
steps against 385 MiB with 1 MiB), and below the 256 KiB at which the server makes glibc serve
allocations from mmap (http.server.MMAP_THRESHOLD_BYTES): each step's bytes object then
reuses heap memory instead of being mapped, page-faulted, zeroed and unmapped again, which
took ~45 % of the server's CPU in 64 MiB GETs (docs/performance.md §7)."""
MAX_PART_BYTES = 5 * 1024 * 1024 * 1024
"""Largest part a peer may send (the largest part_size a cluster may use)."""
MAX_WRITE_ID = 200


class PutResult(msgspec.Struct, kw_only=True):
    path: str
    slot_id: int
    generation: int
    etag: str
    size_bytes: int
    committed_replicas: int
    idempotent_replay: bool = False


class DeleteResult(msgspec.Struct, kw_only=True):
    path: str
    generation: int
    deleted: bool = True
    idempotent_replay: bool = False


class ReadPlan(msgspec.Struct, kw_only=True):
    """What a GET/HEAD will serve: the winning head and the byte range."""

    slot_id: int
    head: Head
    meta: BlobMeta
    range: ByteRange | None
    """None: the whole blob (status 200); else a 206 range."""
    sources: list[str] = msgspec.field(default_factory=list)
    """Replicas known to hold this head (for fetching parts this node lacks)."""

    @property
    def start(self) -> int:
        return self.range.start if self.range else 0

    @property
    def length(self) -> int:
        return self.range.length if self.range else self.meta.size_bytes


class InflightWrites:
    """Writes in progress on this node, by (path, write id).

    A client that times out and retries with the same write id while the original is
    still running must get the original's result, not a second generation: the retry
    waits here for the original to finish, then finds its write-id record and replays.
    """

    def __init__(self) -> None:
        self._running: dict[tuple[str, str], asyncio.Event] = {}

    @contextlib.asynccontextmanager
    async def claim(self, path: str, write_id: str | None) -> AsyncIterator[None]:
        if write_id is None:
            yield
            return
        key = (path, write_id)
        while (running := self._running.get(key)) is not None:
            await running.wait()
        done = asyncio.Event()
        self._running[key] = done
        try:
            yield
        finally:
            del self._running[key]
            done.set()


class BlobStore:
    def __init__(
        self,
        *,
        node_id: str,
        slots: SlotStore,
        index: NodeIndex,
        part_size: int,
        executor: Executor,
        slot_of: Callable[[str], int],
        holds: Callable[[int], bool],
        write_quorum: int = 1,
    ) -> None:
        self.node_id = node_id
        self.slots = slots
        self.index = index
        self.part_size = part_size
        self.executor = executor
        self._slot_of = slot_of
        self._holds = holds
        self.write_quorum = write_quorum
        # Generations handed to writes still in flight, so two concurrent writes of one
        # path on this node never share a generation.
        self._reserved: dict[str, int] = {}
        self.inflight = InflightWrites()
        # Slots whose database the listing index has been built from (open or not): a
        # slot the bounded set of open databases pushed out is not a new slot.
        self._indexed_slots: set[int] = set()
        # The archive tier (§10), set by the server when configured or for read fallback.
        self.archive: Archives | None = None
        # Local cache capacity (`cache.max_bytes`), set by the server when configured: told
        # of reads (recency) and of stored part bytes (accounting).
        self.cache: LocalCache | None = None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def _local_db(self, path: str) -> tuple[int, SlotDb]:
        slot_id = self._slot_of(path)
        if not self._holds(slot_id):
            raise Unavailable(
                f"slot {slot_id} of {path!r} is not held by node {self.node_id} and this "
                "build does not forward requests between nodes yet"
            )
        return slot_id, self.slots.db(slot_id)

    def reserve_generation(self, db: SlotDb, path: str) -> int:
        generation = max(db.max_generation(path), self._reserved.get(path, 0)) + 1
        self._reserved[path] = generation
        return generation

    def release_generation(self, path: str, generation: int) -> None:
        if self._reserved.get(path) == generation:
            del self._reserved[path]

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
        """Store a new generation of `path` on this node (see `_put`); a retry that
        arrives while its original still runs waits for it, then replays it."""
        async with self.inflight.claim(path, write_id):
            return await self._put(
                path,
                body,
                content_length=content_length,
                write_id=write_id,
                content_type=content_type,
                extra=extra,
            )

    async def delete(self, path: str, *, write_id: str | None) -> DeleteResult:
        async with self.inflight.claim(path, write_id):
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
        """Store a new generation of `path`. `extra` fields (content headers, user metadata,
        anything an API layer keeps) are stored in the head's meta document as given; they
        cannot replace the fields this method sets; `etag_override` names the ETag instead of
        the MD5 (see meta_document)."""
        slot_id, db = self._local_db(path)
        if write_id is not None:
            check_write_id(write_id)
            record = db.write_record(path, write_id)
            if record is not None:
                return await self.replay_put(path, slot_id, record, body, content_length)
        else:
            write_id = uuid.uuid4().hex
        generation = self.reserve_generation(db, path)
        try:
            writer = PartWriter(
                layout.generation_dir(db.directory, path, generation),
                self.slots.tmp_dir(slot_id),
                self.part_size,
            )
            try:
                await self.receive_body(body, content_length, writer.feed, writer.flush)
                written = await self.run(writer.finish)
                extra = await self.archive_write(path, generation, write_id, written, extra)
            except BaseException:
                writer.abort()
                raise
            document = meta_document(
                path,
                slot_id=slot_id,
                generation=generation,
                written=written,
                part_size=self.part_size,
                write_id=write_id,
                content_type=content_type,
                extra=extra,
            )
            head = Head.from_document(path, "meta", document)
            parts = new_parts(written)
            record = self.write_record_for(head)
            try:
                applied = await self.run(self.commit, self.slots.db(slot_id), head, parts, record)
            except BaseException:
                writer.abort()
                raise
            if not applied:
                # A newer head arrived meanwhile (another writer of this slot's database).
                await self.run(writer.abort)
                log.info("PUT %r generation %d was superseded before commit", path, generation)
            return PutResult(
                path=path,
                slot_id=slot_id,
                generation=generation,
                etag=written.md5,
                size_bytes=written.size,
                committed_replicas=1,
            )
        finally:
            self.release_generation(path, generation)

    async def archive_write(
        self,
        path: str,
        generation: int,
        write_id: str,
        written: WrittenObject,
        extra: dict[str, Any] | None,
    ) -> dict[str, Any] | None:
        """Write-through (§10.2): with an archive configured, store the blob there before
        its head commits and return `extra` with its `archive_url`; a failure raises."""
        if self.archive is None or not self.archive.enabled:
            return extra
        url, etag = await self.archive.write_through(
            path, generation, write_id, [p.path for p in written.parts], written.size
        )
        fields = {"archive_url": url, **({"archive_etag": etag} if etag else {})}
        return {**(extra or {}), **fields}

    async def archive_fill(self, plan: ReadPlan, *, first_only: bool = False) -> list[int]:
        """Read fallback (§10.3): fetch the plan's parts missing here from the head's
        `archive_url` (with `first_only`, just the range's first part: the stream fetches
        the others as it reaches them). Returns the parts still missing (no archive_url);
        raises `Unavailable` naming the URL when the archive cannot supply them."""
        missing = archive.missing_parts(self, plan)
        if not missing or not plan.meta.archive_url:
            return missing
        if first_only:
            missing = [n for n in missing[:1] if n == plan.start // plan.meta.part_size]
        await archive.fetch_parts(self, self.archive or _READ_ONLY_ARCHIVES, plan, missing)
        if self.cache is not None:
            meta = plan.meta
            fetched = sum(archive.part_length(meta.size_bytes, meta.part_size, n) for n in missing)
            self.cache.stored(plan.slot_id, fetched)
        return []

    async def archive_forget(self, deleted: Head) -> None:
        """In `mirror` layout a committed tombstone deletes the archived object (§10.1),
        when the deleted head points at this path's mirror key. Failures are logged."""
        archive_ = self.archive
        if archive_ is None or not archive_.mirrors or deleted.deleted:
            return
        if deleted.document.get("archive_url") != archive_.mirror_url(deleted.blob_path):
            return
        try:
            await archive_.forget(deleted.blob_path)
        except Unavailable as exc:
            log.warning("deleting the archived copy of %r: %s", deleted.blob_path, exc)

    async def _archive_stream(self, plan: ReadPlan) -> AsyncIterator[bytes]:
        """The plan's bytes part by part, each missing part fetched from the archive just
        before it is read: the response streams while parts arrive (§10.3). The first part
        is fetched and its first chunk read before this returns."""
        pieces = archive.split_by_part(plan)
        await self.archive_fill(pieces[0])
        first = await self.open_stream(pieces[0])
        return self._archive_chain(first, pieces[1:])

    async def _archive_chain(
        self, first: AsyncIterator[bytes], rest: list[ReadPlan]
    ) -> AsyncIterator[bytes]:
        async for chunk in first:
            yield chunk
        for piece in rest:
            await self.archive_fill(piece)
            async for chunk in await self.open_stream(piece):
                yield chunk

    def archive_range(
        self, url: str, start: int, end: int, etag: str | None, size: int
    ) -> AsyncIterator[bytes]:
        """Bytes [start, end) of the archived blob at `url` (a node that holds no replica
        of the slot serves parts nobody has fetched yet this way). An archived object that
        is not `size` bytes is not the blob its head describes: refused, like read-through."""
        store, key = (self.archive or _READ_ONLY_ARCHIVES).store_for(url)
        return store.read_range(key, start, end - start, url, etag, size=size)

    def write_record_for(self, head: Head) -> WriteRecord | None:
        """The idempotency record of a head: derived from the head itself, so it travels
        with the head to every replica that applies it."""
        doc = head.document
        write_id = doc.get("write_id")
        if not isinstance(write_id, str) or not write_id:
            return None
        return WriteRecord(
            blob_path=head.blob_path,
            write_id=write_id,
            head_kind=head.head_kind,
            generation=head.generation,
            etag=str(doc.get("etag") or ""),
            size_bytes=int(doc.get("size_bytes") or 0),
            body_sha256=str(doc.get("sha256") or ""),
            committed_replicas=max(1, self.write_quorum),
        )

    def commit(
        self, db: SlotDb, head: Head, parts: list[NewPart], record: WriteRecord | None
    ) -> bool:
        applied = db.commit_head(head, parts, record)
        if applied:
            self.index.record(head, db.slot_id)
            if parts and self.cache is not None:
                self.cache.stored(db.slot_id, sum(p.size_bytes for p in parts))
        return applied

    async def receive_body(
        self,
        body: AsyncIterable[bytes],
        content_length: int | None,
        feed: Callable[[bytes], bool],
        flush: Callable[[], None] | None,
    ) -> int:
        received = 0
        try:
            async for chunk in body:
                if not chunk:
                    continue
                received += len(chunk)
                if content_length is not None and received > content_length:
                    raise BadRequest("request body is longer than Content-Length")
                if feed(chunk) and flush is not None:
                    await self.run(flush)
        except (BadRequest, asyncio.CancelledError):
            raise
        except Exception as exc:  # the client hung up mid-body
            raise IncompleteBody(
                f"request body ended after {received} bytes: {type(exc).__name__}: {exc}"
            ) from None
        if content_length is not None and received != content_length:
            raise IncompleteBody(f"request body ended after {received} of {content_length} bytes")
        return received

    async def replay_put(
        self,
        path: str,
        slot_id: int,
        record: WriteRecord,
        body: AsyncIterable[bytes],
        content_length: int | None,
    ) -> PutResult:
        hasher = ObjectHasher()

        def feed(chunk: bytes) -> bool:
            hasher.update(chunk)
            return False

        await self.receive_body(body, content_length, feed, None)
        size = hasher.size
        sha256, _md5 = hasher.finish()
        if record.head_kind != "meta" or record.body_sha256 != sha256 or record.size_bytes != size:
            raise WriteIdConflict(
                f"write id {record.write_id!r} was already used for a different "
                f"{'delete' if record.head_kind == 'tombstone' else 'body'} of {path!r}"
            )
        return PutResult(
            path=path,
            slot_id=slot_id,
            generation=record.generation,
            etag=record.etag,
            size_bytes=record.size_bytes,
            committed_replicas=record.committed_replicas,
            idempotent_replay=True,
        )

    # ---- DELETE --------------------------------------------------------------------

    async def _delete(self, path: str, *, write_id: str | None) -> DeleteResult:
        slot_id, db = self._local_db(path)
        if write_id is not None:
            check_write_id(write_id)
            record = db.write_record(path, write_id)
            if record is not None:
                if record.head_kind != "tombstone":
                    raise WriteIdConflict(
                        f"write id {write_id!r} was already used for a PUT of {path!r}"
                    )
                return DeleteResult(path=path, generation=record.generation, idempotent_replay=True)
        else:
            write_id = uuid.uuid4().hex
        current = db.read_head(path)
        if current is None or current.deleted:
            raise NotFound(f"blob {path!r} not found")
        generation = self.reserve_generation(db, path)
        try:
            document = tombstone_document(
                path, slot_id=slot_id, generation=generation, write_id=write_id
            )
            head = Head.from_document(path, "tombstone", document)
            await self.run(self.commit, db, head, [], self.write_record_for(head))
            await self.archive_forget(current)
            return DeleteResult(path=path, generation=generation)
        finally:
            self.release_generation(path, generation)

    # ---- GET / HEAD ----------------------------------------------------------------

    def head_of(self, path: str) -> tuple[int, Head | None]:
        slot_id, db = self._local_db(path)
        return slot_id, db.read_head(path)

    def plan_read(self, path: str, range_header: str | None) -> ReadPlan:
        slot_id, head = self.head_of(path)
        if head is None or head.deleted:
            raise NotFound(f"blob {path!r} not found")
        meta = head.meta()
        byte_range = ByteRange.parse(range_header, meta.size_bytes)
        return ReadPlan(slot_id=slot_id, head=head, meta=meta, range=byte_range)

    def _reader(self, plan: ReadPlan) -> tuple[RangeReader, list[PartRow]]:
        meta = plan.meta
        start, length = plan.start, plan.length
        first = start // meta.part_size
        last = (start + length - 1) // meta.part_size
        db = self.slots.db(plan.slot_id)
        rows = db.parts(plan.head.blob_path, meta.generation, first, last)
        ordered: list[PartRow] = []
        refs: list[PartRef] = []
        for part_no in range(first, last + 1):
            row = rows.get(part_no)
            if row is None:
                raise Unavailable(
                    f"part {part_no} of {plan.head.blob_path!r} generation {meta.generation} "
                    f"is not on node {self.node_id} and no other source is available"
                )
            expected = min(meta.part_size, meta.size_bytes - part_no * meta.part_size)
            ordered.append(row)
            refs.append(PartRef(row.path, expected, row.sha256, row.block_crc32c))
        offset = start - first * meta.part_size
        return RangeReader(refs, offset, length, READ_CHUNK), ordered

    async def open_stream(self, plan: ReadPlan) -> AsyncIterator[bytes]:
        """Verified chunks of the planned range. The first chunk is read before this
        returns, so a missing or corrupt first part fails before any header is sent."""
        if plan.length == 0:
            return _empty()
        if plan.meta.archive_url and archive.missing_parts(self, plan):
            return await self._archive_stream(plan)
        reader, rows = self._reader(plan)
        inline = plan.length <= INLINE_READ_LIMIT
        first = self._read_chunk(reader, rows, plan) if inline else None
        if not inline:
            first = await self.run(self._read_chunk, reader, rows, plan)
        return self._stream(reader, rows, plan, first, inline)

    async def _stream(
        self,
        reader: RangeReader,
        rows: list[PartRow],
        plan: ReadPlan,
        first: bytes | None,
        inline: bool,
    ) -> AsyncIterator[bytes]:
        chunk = first
        while chunk is not None:
            yield chunk
            if inline:
                chunk = self._read_chunk(reader, rows, plan)
            else:
                chunk = await self.run(self._read_chunk, reader, rows, plan)
        computed = reader.computed_block_crcs()
        if computed:
            db = self.slots.db(plan.slot_id)
            for index, crcs in computed:
                await self.run(db.store_block_crcs, rows[index].row_id, crcs)

    def _read_chunk(self, reader: RangeReader, rows: list[PartRow], plan: ReadPlan) -> bytes | None:
        if self.cache is not None:
            self.cache.read(plan.slot_id, plan.head.blob_path, plan.meta.generation)
        return self._verified_chunk(reader, plan.slot_id, plan.head.blob_path, plan.meta.generation)

    def _verified_chunk(
        self, reader: RangeReader, slot_id: int, blob_path: str, generation: int
    ) -> bytes | None:
        try:
            return reader.read_chunk()
        except IntegrityError as exc:
            bad_path = str(exc.args[1]) if len(exc.args) > 1 else ""
            moved = self.slots.quarantine(slot_id, bad_path) if bad_path else None
            log.error(
                "part of %r generation %d failed verification (%s); quarantined to %s",
                blob_path,
                generation,
                exc.args[0] if exc.args else exc,
                moved,
            )
            raise DataCorrupted(
                f"stored bytes of {blob_path!r} failed verification and no other copy is available"
            ) from None
        except FileNotFoundError as exc:
            # The file's path is for the operator's log, not for the client's error message.
            log.warning("a part file of %r is missing: %s", blob_path, exc.filename)
            raise Unavailable(
                f"a part file of {blob_path!r} generation {generation} is missing on node "
                f"{self.node_id}"
            ) from None

    # ---- internal API: one part or one head at a time (node to node) -----------------

    def _slot_db(self, slot_id: int, path: str) -> SlotDb:
        expected = self._slot_of(path)
        if expected != slot_id:
            raise BadRequest(f"path {path!r} belongs to slot {expected}, not {slot_id}")
        return self.slots.db(slot_id)

    async def store_part(
        self,
        slot_id: int,
        path: str,
        *,
        generation: int,
        part_no: int,
        sha256: str,
        body: AsyncIterable[bytes],
        content_length: int | None,
    ) -> bool:
        """Store one part sent by a peer, verified against `sha256`. True: it was
        already here (the body is drained and dropped)."""
        db = self._slot_db(slot_id, path)
        existing = db.find_part(path, generation, part_no)
        if existing is not None and existing.sha256 == sha256 and _file_exists(existing.path):
            await self.receive_body(body, content_length, lambda _chunk: False, None)
            return True
        writer = self.single_part_writer(slot_id, db, path, generation, part_no)
        try:
            await self.receive_body(body, content_length, writer.feed, writer.flush)
            written = await self.run(writer.finish)
        except BaseException:
            writer.abort()
            raise
        part = await self.keep_single_part(db, path, generation, part_no, writer, written, sha256)
        if part is None:
            raise BadRequest(
                f"part body has sha256 {written.sha256}, not {sha256}"
                if written.parts
                else "a part cannot be empty"
            )
        if self.cache is not None:
            self.cache.stored(slot_id, part.size)
        return False

    def single_part_writer(
        self, slot_id: int, db: SlotDb, path: str, generation: int, part_no: int
    ) -> PartWriter:
        """A writer for part `part_no` of `path` at `generation` arriving on its own (from a
        peer or the archive), however large the cluster's part size."""
        return PartWriter(
            layout.generation_dir(db.directory, path, generation),
            self.slots.tmp_dir(slot_id),
            MAX_PART_BYTES,
            first_part_no=part_no,
        )

    async def keep_single_part(
        self,
        db: SlotDb,
        path: str,
        generation: int,
        part_no: int,
        writer: PartWriter,
        written: WrittenObject,
        sha256: str | None,
        size: int | None = None,
    ) -> PartInfo | None:
        """Record the one part `writer` wrote when it has the expected SHA-256 and size (None:
        not checked) and return it; otherwise discard its file and return None."""
        part = written.parts[0] if len(written.parts) == 1 else None
        if (
            part is None
            or (size is not None and part.size != size)
            or (sha256 is not None and part.sha256 != sha256)
        ):
            recorded = db.find_part(path, generation, part_no)
            if not (part and recorded and recorded.path == part.path):
                # (A file with the same name is a recorded part with these very bytes: keep it.)
                await self.run(writer.abort)
            return None
        try:
            await self.run(db.insert_part, path, generation, new_parts(written)[0])
        except BaseException:
            writer.abort()
            raise
        return part

    async def part_stream(
        self, slot_id: int, path: str, *, generation: int, part_no: int, sha256: str
    ) -> tuple[int, AsyncIterator[bytes]]:
        """Size and verified bytes of one stored part."""
        db = self._slot_db(slot_id, path)
        row = db.find_part(path, generation, part_no)
        if row is None or row.sha256 != sha256:
            raise NotFound(
                f"part {part_no} ({sha256}) of {path!r} generation {generation} is not here"
            )
        size = row.size_bytes if row.size_bytes >= 0 else _file_size(row.path)
        reader = RangeReader([PartRef(row.path, size, row.sha256, row.block_crc32c)], 0, size)
        first = await self.run(self._verified_chunk, reader, slot_id, path, generation)

        async def chunks() -> AsyncIterator[bytes]:
            chunk = first
            while chunk is not None:
                if self.cache is not None:  # a peer's copy in progress: not a client read
                    self.cache.serving(slot_id, path, generation)
                yield chunk
                chunk = await self.run(self._verified_chunk, reader, slot_id, path, generation)

        return size, chunks()

    def part_rows(self, slot_id: int, path: str, generation: int) -> list[PartRow]:
        db = self._slot_db(slot_id, path)
        rows = db.parts(path, generation, 0, 2**62)
        return [rows[n] for n in sorted(rows)]

    def present_parts(self, slot_id: int, path: str, generation: int) -> set[int]:
        """Part numbers of one generation that have a row and a file on this node."""
        return {
            r.part_no for r in self.part_rows(slot_id, path, generation) if os.path.exists(r.path)
        }

    def write_record(self, slot_id: int, path: str, write_id: str) -> WriteRecord | None:
        return self._slot_db(slot_id, path).write_record(path, write_id)

    async def apply_head(self, slot_id: int, head: Head) -> bool:
        """Apply a head sent by a peer if it wins (§6); with it, its write-id record."""
        db = self._slot_db(slot_id, head.blob_path)
        return await self.run(self.commit, db, head, [], self.write_record_for(head))

    async def abort_head(self, slot_id: int, path: str, generation: int, head_sha256: str) -> bool:
        """Remove a head whose write missed its quorum, where it is still that head."""
        db = self._slot_db(slot_id, path)

        def remove() -> bool:
            removed = db.remove_head(path, generation, head_sha256)
            if removed:
                self.index.reconcile_slot(slot_id, db.all_heads)
            return removed

        return await self.run(remove)

    # ---- LIST ----------------------------------------------------------------------

    def list(
        self, prefix: str, after: str | None, limit: int, include_deleted: bool
    ) -> list[IndexEntry]:
        return self.index.list(prefix, after, limit, include_deleted)

    def sync_external_changes(self) -> int:
        """Re-index slots whose databases another process wrote (worker thread).

        Slot databases that appeared on disk since the last call are opened (and so
        indexed) too. Returns how many slots were re-indexed.
        """
        known = {db.slot_id for db in self.slots.open_dbs()}
        synced = 0
        for slot_id in self.slots.existing_slots():
            if slot_id not in self._indexed_slots:
                db = self.slots.db(slot_id)
                self.index.reconcile_slot(slot_id, db.all_heads)
                self._indexed_slots.add(slot_id)
                synced += 1
        for db in self.slots.open_dbs():
            if db.slot_id in known and db.changed_by_others():
                self.index.reconcile_slot(db.slot_id, db.all_heads)
                synced += 1
        return synced

    def reconcile_index(self) -> int:
        """Rebuild the listing index from every slot database on this node (worker thread)."""
        count = 0
        for slot_id in self.slots.existing_slots():
            db = self.slots.db(slot_id)
            self.index.reconcile_slot(slot_id, db.all_heads)
            self._indexed_slots.add(slot_id)
            count += len(self.index.list_slot(slot_id))
        return count


_READ_ONLY_ARCHIVES = Archives(None)
"""Readers for archive URLs when no archive is configured (imported heads)."""


def meta_document(
    path: str,
    *,
    slot_id: int,
    generation: int,
    written: WrittenObject,
    part_size: int,
    write_id: str,
    content_type: str | None,
    extra: dict[str, Any] | None,
) -> dict[str, Any]:
    """The meta head of a new generation (§5): small, no list of parts."""
    document: dict[str, Any] = {
        "path": path,
        "slot_id": slot_id,
        "generation": generation,
        "version": generation,
        "size_bytes": written.size,
        "etag": written.md5,
        "md5": written.md5,
        "sha256": written.sha256,
        "part_size": part_size,
        "part_count": len(written.parts),
        "part_index_state": "complete",
        "updated_at": now_rfc3339(),
        "write_id": write_id,
    }
    if content_type:
        document["content_type"] = content_type
    if extra:
        document = {**extra, **document}
        etag = document.pop("etag_override", None)
        if isinstance(etag, str) and etag:
            # An API layer may name the blob's ETag itself (S3 multipart objects: md5 of
            # the part md5s, "-<count>"); `md5` stays the MD5 of the bytes.
            document["etag"] = etag
    return document


def tombstone_document(
    path: str, *, slot_id: int, generation: int, write_id: str
) -> dict[str, Any]:
    return {
        "path": path,
        "slot_id": slot_id,
        "generation": generation,
        "version": generation,
        "deleted": True,
        "write_id": write_id,
        "updated_at": now_rfc3339(),
    }


def new_parts(written: WrittenObject) -> list[NewPart]:
    return [
        NewPart(
            part_no=p.part_no,
            sha256=p.sha256,
            size_bytes=p.size,
            path=p.path,
            block_crc32c=p.block_crc32c,
        )
        for p in written.parts
    ]


async def _empty() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an async generator


def _file_exists(path: str) -> bool:
    return os.path.exists(path)


def _file_size(path: str) -> int:
    return os.path.getsize(path)


def check_write_id(write_id: str) -> None:
    if not write_id or len(write_id) > MAX_WRITE_ID or not write_id.isprintable():
        raise BadRequest(f"X-Amberio-Write-Id must be 1..{MAX_WRITE_ID} printable characters")
