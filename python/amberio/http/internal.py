"""The internal API (contract §8), prefix `/internal/v1`, node to node.

Paths here are opaque blob paths (no normalization): they arrive in the `path` query
parameter exactly as the coordinating node sent them.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import msgspec

from amberio.cluster import heal, signing
from amberio.errors import BadRequest, MethodNotAllowed, NotFound, PayloadTooLarge
from amberio.http.messages import Request, send_json, send_stream
from amberio.storage.heads import Head

if TYPE_CHECKING:
    from amberio.http.router import Node

PREFIX = "/internal/v1"
MAX_HEAD_BODY = 1024 * 1024
MAX_INDEX_PAGE = 1001
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_HEX = re.compile(r"^[0-9a-f]*$")
_B = TypeVar("_B")
log = logging.getLogger("amberio.http.internal")


class HeadUpdate(msgspec.Struct, forbid_unknown_fields=False):
    """Body of `PUT .../heads`: a head to apply if it wins (§6)."""

    head_kind: Literal["meta", "tombstone"]
    generation: int
    head_sha256: str
    meta: dict[str, Any] | None = None
    tombstone: dict[str, Any] | None = None


_head_update = msgspec.json.Decoder(HeadUpdate)


async def handle(node: Node, req: Request) -> None:
    secret = node.runtime.state.cluster_secret
    if secret:
        signing.verify(
            secret,
            req.method,
            req.path,
            req.query_string,
            node_id=req.header(signing.NODE_HEADER),
            timestamp=req.header(signing.TIMESTAMP_HEADER),
            signature=req.header(signing.SIGNATURE_HEADER),
        )
    parts = req.path[len(PREFIX) :].strip("/").split("/")
    if parts == ["index"] and req.method == "GET":
        _list_index(node, req)
        return
    if parts == ["heal", "slots"]:
        await _heal_slot_digests(node, req)
        return
    if len(parts) >= 3 and parts[0] == "slots":
        slot_id = _slot(node, parts[1])
        rest = parts[2:]
        if rest == ["parts"] and req.method == "GET":
            _list_parts(node, req, slot_id)
            return
        if rest == ["writes"] and req.method == "GET":
            _get_write(node, req, slot_id)
            return
        if rest[0] == "heal" and len(rest) == 2:
            await _heal(node, req, slot_id, rest[1])
            return
        if rest == ["heads"]:
            if req.method == "GET":
                _get_heads(node, req, slot_id)
            elif req.method == "PUT":
                await _put_head(node, req, slot_id)
            elif req.method == "DELETE":
                await _abort_head(node, req, slot_id)
            else:
                raise MethodNotAllowed(f"{req.method} is not allowed on heads")
            return
        if len(rest) == 2 and rest[0] == "parts":
            sha256 = _sha256(rest[1], "part sha256")
            if req.method == "PUT":
                await _put_part(node, req, slot_id, sha256)
            elif req.method in ("GET", "HEAD"):
                await _get_part(node, req, slot_id, sha256)
            else:
                raise MethodNotAllowed(f"{req.method} is not allowed on parts")
            return
    raise NotFound(f"no such internal route: {req.path}")


def _slot(node: Node, raw: str) -> int:
    total = node.runtime.placement.total_slots
    if not (raw.isascii() and raw.isdigit()) or int(raw) >= total:
        raise BadRequest(f"slot must be an integer in [0, {total}), got {raw!r}")
    return int(raw)


def _sha256(raw: str, what: str) -> str:
    if not _SHA256.match(raw):
        raise BadRequest(f"{what} must be 64 lowercase hex characters, got {raw!r}")
    return raw


def _path(req: Request) -> str:
    path = req.query.get("path")
    if not path:
        raise BadRequest("query parameter 'path' is required")
    return path


def _int_query(req: Request, name: str, minimum: int) -> int:
    raw = req.query.get(name)
    if raw is None:
        raise BadRequest(f"query parameter {name!r} is required")
    if not (raw.isascii() and raw.isdigit()) or int(raw) < minimum:
        raise BadRequest(f"query parameter {name!r} must be an integer >= {minimum}, got {raw!r}")
    return int(raw)


async def _put_part(node: Node, req: Request, slot_id: int, sha256: str) -> None:
    reused = await node.blobs.store_part(
        slot_id,
        _path(req),
        generation=_int_query(req, "generation", 1),
        part_no=_int_query(req, "part_no", 0),
        sha256=sha256,
        body=req.body(),
        content_length=req.content_length(),
    )
    send_json(req, 200, {"accepted": True, "reused": reused, "sha256": sha256})


async def _get_part(node: Node, req: Request, slot_id: int, sha256: str) -> None:
    size, chunks = await node.blobs.part_stream(
        slot_id,
        _path(req),
        generation=_int_query(req, "generation", 1),
        part_no=_int_query(req, "part_no", 0),
        sha256=sha256,
    )
    headers = [("content-type", "application/octet-stream"), ("content-length", str(size))]
    if req.method == "HEAD":
        req.proto.response_empty(200, headers)
        return
    await send_stream(req, 200, headers, chunks, node.limits)


async def _read_json_body(req: Request) -> bytes:
    length = req.content_length()
    if length is not None and length > MAX_HEAD_BODY:
        raise PayloadTooLarge(f"head body over {MAX_HEAD_BODY} bytes")
    data = bytearray()
    async for chunk in req.body():
        data += chunk
        if len(data) > MAX_HEAD_BODY:
            raise PayloadTooLarge(f"head body over {MAX_HEAD_BODY} bytes")
    return bytes(data)


async def _put_head(node: Node, req: Request, slot_id: int) -> None:
    path = _path(req)
    try:
        update = _head_update.decode(await _read_json_body(req))
    except msgspec.DecodeError as exc:
        raise BadRequest(f"head body is not valid: {exc}") from None
    document = update.meta if update.head_kind == "meta" else update.tombstone
    if document is None:
        raise BadRequest(f"a {update.head_kind} head needs its {update.head_kind!r} document")
    head = Head.from_document(path, update.head_kind, document)
    if head.generation != update.generation or head.generation < 1:
        raise BadRequest(
            f"generation {update.generation} disagrees with the document's {head.generation}"
        )
    if update.head_sha256 != head.head_sha256:
        # The sender's sha256 is the head's identity (§6 orders equal generations by it):
        # a head another tool wrote, or whose part_index_state moved, keeps the sha256 its
        # row has, which need not be the sha256 of the document as re-encoded here.
        head = msgspec.structs.replace(head, head_sha256=_sha256(update.head_sha256, "head_sha256"))
    if document.get("path", path) != path:
        raise BadRequest(f"the document names path {document.get('path')!r}, not {path!r}")
    applied = await node.blobs.apply_head(slot_id, head)
    send_json(
        req,
        200,
        {"applied": applied, "head_kind": head.head_kind, "generation": head.generation},
    )


async def _abort_head(node: Node, req: Request, slot_id: int) -> None:
    path = _path(req)
    generation = _int_query(req, "generation", 1)
    head_sha256 = _sha256(req.query.get("head_sha256", ""), "head_sha256")
    removed = await node.blobs.abort_head(slot_id, path, generation, head_sha256)
    send_json(req, 200, {"removed": removed, "generation": generation})


def _list_index(node: Node, req: Request) -> None:
    """A page of this node's listing index (extension of §8: LIST across nodes)."""
    limit = _int_query(req, "limit", 1)
    if limit > MAX_INDEX_PAGE:
        raise BadRequest(f"limit must be at most {MAX_INDEX_PAGE}")
    after = req.query.get("after")
    entries = node.blobs.list(req.query.get("prefix", ""), after, limit, True)
    send_json(req, 200, [msgspec.to_builtins(e) for e in entries])


def _list_parts(node: Node, req: Request, slot_id: int) -> None:
    """Part rows of one generation (extension of §8: peers need the shas to fetch parts)."""
    path = _path(req)
    generation = _int_query(req, "generation", 1)
    rows = node.blobs.part_rows(slot_id, path, generation)
    send_json(
        req,
        200,
        [{"part_no": r.part_no, "sha256": r.sha256, "size_bytes": r.size_bytes} for r in rows],
    )


def _get_write(node: Node, req: Request, slot_id: int) -> None:
    """A write-id record (extension of §8: replay of a retry on any node)."""
    path = _path(req)
    write_id = req.query.get("write_id")
    if not write_id:
        raise BadRequest("query parameter 'write_id' is required")
    record = node.blobs.write_record(slot_id, path, write_id)
    if record is None:
        raise NotFound(f"no write {write_id!r} recorded for {path!r}")
    send_json(req, 200, msgspec.to_builtins(record))


def _get_heads(node: Node, req: Request, slot_id: int) -> None:
    path = _path(req)
    # Below the HTTP layers a blob path is opaque: look it up exactly as given.
    expected = node.runtime.placement.slot_of(path)
    if expected != slot_id:
        raise BadRequest(f"path {path!r} belongs to slot {expected}, not {slot_id}")
    head = node.slots.db(slot_id).read_head(path)
    if head is None:
        send_json(
            req,
            200,
            {
                "found": False,
                "head_kind": None,
                "generation": None,
                "head_sha256": None,
                "meta": None,
                "tombstone": None,
            },
        )
        return
    send_json(
        req,
        200,
        {
            "found": True,
            "head_kind": head.head_kind,
            "generation": head.generation,
            "head_sha256": head.head_sha256,
            "meta": head.document if head.head_kind == "meta" else None,
            "tombstone": head.document if head.head_kind == "tombstone" else None,
        },
    )


# ---- heal routes (§8; the repair machinery is amberio.cluster.heal) ---------------------


class _HealHeadsBody(msgspec.Struct):
    prefixes: list[str]


class _HealRepairBody(msgspec.Struct):
    source_node_id: str
    blob_paths: list[str]
    dry_run: bool = False


class _HealSlotsBody(msgspec.Struct):
    slots: list[int]


def _healer(node: Node) -> heal.Healer:
    return heal.Healer(
        node_id=node.node_id,
        placement=node.runtime.placement,
        blobs=node.blobs,
        peers=node.coordinator.peers,
    )


async def _json_body(req: Request, kind: type[_B], what: str) -> _B:
    data = await _read_json_body(req)
    try:
        return msgspec.json.decode(data, type=kind)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"{what} body is not valid: {exc}") from None


async def _heal(node: Node, req: Request, slot_id: int, action: str) -> None:
    healer = _healer(node)
    if action == "slotlets":
        if req.method != "GET":
            raise MethodNotAllowed(f"{req.method} is not allowed on heal/slotlets")
        raw = req.query.get("prefix_len", str(heal.DEFAULT_PREFIX_LEN))
        if not (raw.isascii() and raw.isdigit()) or not 0 <= int(raw) <= heal.MAX_PREFIX_LEN:
            raise BadRequest(
                f"prefix_len must be an integer in [0, {heal.MAX_PREFIX_LEN}], got {raw!r}"
            )
        prefix_len = int(raw)
        found = await healer.local_slotlets(slot_id, prefix_len)
        send_json(
            req,
            200,
            {"slot_id": slot_id, "prefix_len": prefix_len, "slotlets": msgspec.to_builtins(found)},
        )
        return
    if action not in ("heads", "repair"):
        raise NotFound(f"no such internal route: {req.path}")
    if req.method != "POST":
        raise MethodNotAllowed(f"{req.method} is not allowed on heal/{action}")
    if action == "heads":
        body = await _json_body(req, _HealHeadsBody, "heal/heads")
        if len(body.prefixes) > heal.MAX_PREFIXES:
            raise BadRequest(f"at most {heal.MAX_PREFIXES} prefixes per request")
        for prefix in body.prefixes:
            if len(prefix) > 64 or not _HEX.match(prefix):
                raise BadRequest(f"prefix {prefix!r} is not lowercase hex (at most 64 chars)")
        keys = await healer.local_heads_by_prefix(slot_id, body.prefixes)
        send_json(
            req,
            200,
            {
                "slot_id": slot_id,
                "heads": [
                    {"path": p, "head_kind": k, "generation": g, "head_sha256": h}
                    for p, k, g, h in keys
                ],
            },
        )
        return
    repair = await _json_body(req, _HealRepairBody, "heal/repair")
    placement = node.runtime.placement
    source = repair.source_node_id
    if source not in placement.node_ids:
        raise BadRequest(f"source_node_id {source!r} is not a node of this cluster")
    if source == node.node_id:
        raise BadRequest(f"source_node_id {source!r} is this node")
    if not placement.holds(node.node_id, slot_id):
        raise BadRequest(f"node {node.node_id} does not hold slot {slot_id}")
    if len(repair.blob_paths) > heal.MAX_REPAIR_PATHS:
        raise BadRequest(f"at most {heal.MAX_REPAIR_PATHS} blob_paths per request")
    for path in repair.blob_paths:
        if not path:
            raise BadRequest("blob_paths may not contain an empty path")
        expected = placement.slot_of(path)
        if expected != slot_id:
            raise BadRequest(f"path {path!r} belongs to slot {expected}, not {slot_id}")
    report = await healer.repair(slot_id, source, repair.blob_paths, dry_run=repair.dry_run)
    log.info(
        "heal/repair slot %d from %s: %d repaired, %d skipped, %d errors, %d bytes moved%s",
        slot_id,
        source,
        report.repaired_objects,
        report.skipped_objects,
        len(report.errors),
        report.moved_bytes,
        " (dry run)" if report.dry_run else "",
    )
    send_json(req, 200, msgspec.to_builtins(report))


async def _heal_slot_digests(node: Node, req: Request) -> None:
    """Whole-slot digests of many slots (extension of §8: anti-entropy's first look)."""
    if req.method != "POST":
        raise MethodNotAllowed(f"{req.method} is not allowed on heal/slots")
    body = await _json_body(req, _HealSlotsBody, "heal/slots")
    total = node.runtime.placement.total_slots
    bad = [s for s in body.slots if not 0 <= s < total]
    if bad:
        raise BadRequest(f"slot {bad[0]} out of range [0, {total})")
    found = await _healer(node).local_slot_digests(body.slots)
    send_json(req, 200, {"node_id": node.node_id, "slots": msgspec.to_builtins(found)})
