"""The internal API (contract §8), prefix `/internal/v1`, node to node."""

from __future__ import annotations

from typing import TYPE_CHECKING

from amberio.errors import BadRequest, MethodNotAllowed, NotFound
from amberio.http.messages import Request, send_json

if TYPE_CHECKING:
    from amberio.http.router import Node

PREFIX = "/internal/v1"


async def handle(node: Node, req: Request) -> None:
    parts = req.path[len(PREFIX) :].strip("/").split("/")
    if len(parts) >= 3 and parts[0] == "slots":
        slot_id = _slot(node, parts[1])
        if parts[2:] == ["heads"]:
            if req.method != "GET":
                raise MethodNotAllowed(
                    f"{req.method} on heads arrives with the cluster internal API; use GET"
                )
            _get_heads(node, req, slot_id)
            return
    raise NotFound(f"no such internal route: {req.path}")


def _slot(node: Node, raw: str) -> int:
    total = node.runtime.placement.total_slots
    if not (raw.isascii() and raw.isdigit()) or int(raw) >= total:
        raise BadRequest(f"slot must be an integer in [0, {total}), got {raw!r}")
    return int(raw)


def _get_heads(node: Node, req: Request, slot_id: int) -> None:
    path = req.query.get("path")
    if path is None or path == "":
        raise BadRequest("query parameter 'path' is required")
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
