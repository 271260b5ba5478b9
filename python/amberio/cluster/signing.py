"""Signatures on the internal API (contract §8): HMAC-SHA256 with the cluster secret.

The signed string is `method \\n path \\n raw query \\n timestamp \\n node id`; a request is
fresh for `MAX_SKEW_SECONDS` either side of the receiver's clock.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from amberio.errors import Forbidden

NODE_HEADER = "x-amberio-node-id"
TIMESTAMP_HEADER = "x-amberio-timestamp"
SIGNATURE_HEADER = "x-amberio-signature"
MAX_SKEW_SECONDS = 300


def _digest(secret: str, method: str, path: str, query: str, timestamp: str, node_id: str) -> str:
    message = "\n".join((method.upper(), path, query, timestamp, node_id)).encode("utf-8")
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def sign(secret: str, method: str, path: str, query: str, node_id: str) -> dict[str, str]:
    """Headers that authenticate one internal request."""
    timestamp = str(int(time.time()))
    return {
        NODE_HEADER: node_id,
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: _digest(secret, method, path, query, timestamp, node_id),
    }


def verify(
    secret: str,
    method: str,
    path: str,
    query: str,
    *,
    node_id: str | None,
    timestamp: str | None,
    signature: str | None,
    now: float | None = None,
) -> None:
    """Raise Forbidden (403) unless the request carries a valid, fresh signature."""
    if not node_id or not timestamp or not signature:
        raise Forbidden("internal request is not signed (this cluster has a secret)")
    if not (timestamp.isascii() and timestamp.isdigit()):
        raise Forbidden("internal request has a malformed timestamp")
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > MAX_SKEW_SECONDS:
        raise Forbidden("internal request signature is stale (check the nodes' clocks)")
    expected = _digest(secret, method, path, query, timestamp, node_id)
    if not hmac.compare_digest(expected, signature.lower()):
        raise Forbidden("internal request signature does not match")
