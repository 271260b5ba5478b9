"""Talking to other nodes: one keep-alive connection pool per peer (aiohttp).

aiohttp is the async client here because it streams request and response bodies, keeps a
connection pool per host with keep-alive, and is the fastest mature asyncio HTTP client
(its parser is in C). Every call has a timeout; idempotent reads are retried. Timeouts and
retries come from the config's optional `peers` section (`PeersConfig`; defaults below).
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import msgspec
from yarl import URL

from amberio.cluster import signing
from amberio.cluster.state import BootstrapState
from amberio.config import PeersConfig
from amberio.storage.heads import Head
from amberio.storage.index import IndexEntry

log = logging.getLogger("amberio.cluster.peers")

INTERNAL = "/internal/v1"
DEFAULTS = PeersConfig()
PART_ACK_TIMEOUT = 60.0
"""Longest wait for a peer to verify and fsync a part we sent (under load that takes a
while; a hung peer is left behind by the quorum step once W replicas have the part)."""
POOL_PER_PEER = 64


class PeerError(Exception):
    """A peer could not be reached, timed out, or answered with an error."""

    def __init__(self, node_id: str, message: str, status: int | None = None) -> None:
        super().__init__(f"node {node_id}: {message}")
        self.node_id = node_id
        self.status = status


class PartListing(msgspec.Struct, frozen=True):
    part_no: int
    sha256: str
    size_bytes: int


class _HeadAnswer(msgspec.Struct):
    found: bool
    head_kind: str | None = None
    generation: int | None = None
    head_sha256: str | None = None
    meta: dict[str, Any] | None = None
    tombstone: dict[str, Any] | None = None


_head_answer = msgspec.json.Decoder(_HeadAnswer)
_parts_answer = msgspec.json.Decoder(list[PartListing])
_index_answer = msgspec.json.Decoder(list[IndexEntry])
_json = msgspec.json.Encoder()


def _query(params: Mapping[str, object]) -> str:
    return urllib.parse.urlencode(
        {k: str(v) for k, v in params.items()}, quote_via=urllib.parse.quote, safe=""
    )


class Peers:
    """Clients for every other node of the cluster."""

    def __init__(
        self, state: BootstrapState, node_id: str, settings: PeersConfig | None = None
    ) -> None:
        self.node_id = node_id
        self.settings = settings or DEFAULTS
        self.secret = state.cluster_secret
        self.addresses = {n.node_id: n.advertise_addr for n in state.nodes}
        self._sessions: dict[str, aiohttp.ClientSession] = {}

    def _session(self, node_id: str) -> aiohttp.ClientSession:
        session = self._sessions.get(node_id)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(
                limit=POOL_PER_PEER, keepalive_timeout=30, enable_cleanup_closed=True
            )
            session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=self.settings.connect_timeout_seconds
                ),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
            )
            self._sessions[node_id] = session
        return session

    def _part_timeout(self, sock_read: float) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(
            total=self.settings.part_timeout_seconds,
            connect=self.settings.connect_timeout_seconds,
            sock_read=sock_read,
        )

    async def close(self) -> None:
        sessions = list(self._sessions.values())
        self._sessions.clear()
        for session in sessions:
            await session.close()

    def _url_and_headers(
        self, node_id: str, method: str, path: str, params: Mapping[str, object]
    ) -> tuple[URL, dict[str, str]]:
        address = self.addresses.get(node_id)
        if address is None:
            raise PeerError(node_id, "not a node of this cluster")
        query = _query(params)
        headers = {signing.NODE_HEADER: self.node_id}
        if self.secret:
            headers.update(signing.sign(self.secret, method, path, query, self.node_id))
        url = URL(f"http://{address}{path}" + (f"?{query}" if query else ""), encoded=True)
        return url, headers

    async def call(
        self,
        node_id: str,
        method: str,
        path: str,
        params: Mapping[str, object],
        *,
        body: bytes | None = None,
        deadline_seconds: float | None = None,
        retries: int = 0,
    ) -> tuple[int, bytes]:
        """One request with a small body; returns (status, body). 5xx and network errors
        raise PeerError (after `retries` more tries). The deadline defaults to the
        configured request timeout."""
        attempt = 0
        deadline = deadline_seconds or self.settings.request_timeout_seconds
        connect = self.settings.connect_timeout_seconds
        while True:
            url, headers = self._url_and_headers(node_id, method, path, params)
            try:
                async with self._session(node_id).request(
                    method,
                    url,
                    data=body,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=deadline, connect=connect),
                ) as resp:
                    data = await resp.read()
                    if resp.status >= 500:
                        raise PeerError(
                            node_id, f"{method} {path}: HTTP {resp.status}", resp.status
                        )
                    return resp.status, data
            except (aiohttp.ClientError, TimeoutError, OSError, PeerError) as exc:
                # A peer that timed out is not asked again: that would double the wait.
                if attempt >= retries or isinstance(exc, TimeoutError):
                    if isinstance(exc, PeerError):
                        raise
                    raise PeerError(
                        node_id, f"{method} {path}: {type(exc).__name__} {exc}"
                    ) from None
                attempt += 1
                await asyncio.sleep(0.05 * attempt)

    # ---- heads ---------------------------------------------------------------------

    async def get_head(self, node_id: str, slot_id: int, path: str) -> Head | None:
        status, data = await self.call(
            node_id,
            "GET",
            f"{INTERNAL}/slots/{slot_id}/heads",
            {"path": path},
            retries=self.settings.retries,
        )
        if status != 200:
            raise PeerError(node_id, f"GET heads: HTTP {status} {data[:200]!r}", status)
        answer = _head_answer.decode(data)
        if not answer.found:
            return None
        document = answer.meta if answer.head_kind == "meta" else answer.tombstone
        if document is None or answer.head_kind not in ("meta", "tombstone"):
            raise PeerError(node_id, "GET heads: malformed answer")
        head = Head.from_document(path, answer.head_kind, document)  # type: ignore[arg-type]
        if answer.head_sha256 and answer.head_sha256 != head.head_sha256:
            # Keep the peer's identity of the head (its row's sha256), not a re-encoding's.
            head = msgspec.structs.replace(head, head_sha256=answer.head_sha256)
        return head

    async def put_head(self, node_id: str, slot_id: int, head: Head) -> bool:
        body = _json.encode(
            {
                "head_kind": head.head_kind,
                "generation": head.generation,
                "head_sha256": head.head_sha256,
                head.head_kind: head.document,
            }
        )
        status, data = await self.call(
            node_id,
            "PUT",
            f"{INTERNAL}/slots/{slot_id}/heads",
            {"path": head.blob_path},
            body=body,
        )
        if status != 200:
            raise PeerError(node_id, f"PUT heads: HTTP {status} {data[:200]!r}", status)
        return bool(msgspec.json.decode(data).get("applied"))

    async def abort_head(self, node_id: str, slot_id: int, head: Head) -> bool:
        status, data = await self.call(
            node_id,
            "DELETE",
            f"{INTERNAL}/slots/{slot_id}/heads",
            {
                "path": head.blob_path,
                "generation": head.generation,
                "head_sha256": head.head_sha256,
            },
            retries=self.settings.retries,
        )
        if status != 200:
            raise PeerError(node_id, f"abort head: HTTP {status} {data[:200]!r}", status)
        return bool(msgspec.json.decode(data).get("removed"))

    async def write_record(
        self, node_id: str, slot_id: int, path: str, write_id: str
    ) -> dict[str, Any] | None:
        status, data = await self.call(
            node_id,
            "GET",
            f"{INTERNAL}/slots/{slot_id}/writes",
            {"path": path, "write_id": write_id},
            retries=self.settings.retries,
        )
        if status == 404:
            return None
        if status != 200:
            raise PeerError(node_id, f"GET writes: HTTP {status}", status)
        answer: dict[str, Any] = msgspec.json.decode(data)
        return answer

    async def list_index(
        self, node_id: str, prefix: str, after: str | None, limit: int
    ) -> list[IndexEntry]:
        """A page of the node's listing index, tombstones included."""
        params: dict[str, object] = {"prefix": prefix, "limit": limit}
        if after is not None:
            params["after"] = after
        status, data = await self.call(
            node_id, "GET", f"{INTERNAL}/index", params, retries=self.settings.retries
        )
        if status != 200:
            raise PeerError(node_id, f"GET index: HTTP {status}", status)
        return _index_answer.decode(data)

    # ---- parts ---------------------------------------------------------------------

    async def list_parts(
        self, node_id: str, slot_id: int, path: str, generation: int
    ) -> list[PartListing]:
        status, data = await self.call(
            node_id,
            "GET",
            f"{INTERNAL}/slots/{slot_id}/parts",
            {"path": path, "generation": generation},
            retries=self.settings.retries,
        )
        if status != 200:
            raise PeerError(node_id, f"GET parts: HTTP {status}", status)
        return _parts_answer.decode(data)

    async def put_part(
        self,
        node_id: str,
        slot_id: int,
        path: str,
        generation: int,
        part_no: int,
        sha256: str,
        file_path: str,
        size: int,
    ) -> None:
        api = f"{INTERNAL}/slots/{slot_id}/parts/{sha256}"
        params = {"path": path, "generation": generation, "part_no": part_no}
        url, headers = self._url_and_headers(node_id, "PUT", api, params)
        headers["content-length"] = str(size)
        headers["content-type"] = "application/octet-stream"
        try:
            with open(file_path, "rb") as f:  # noqa: ASYNC230 - aiohttp reads it in chunks
                async with self._session(node_id).put(
                    url,
                    data=f,
                    headers=headers,
                    # The answer comes after the peer verified and fsynced the part, which
                    # takes a while on a busy disk; a hung peer is left behind by the
                    # quorum step once W replicas have the part anyway.
                    timeout=self._part_timeout(
                        min(PART_ACK_TIMEOUT, self.settings.part_timeout_seconds)
                    ),
                ) as resp:
                    data = await resp.read()
                    if resp.status != 200:
                        raise PeerError(
                            node_id,
                            f"PUT part {part_no}: HTTP {resp.status} {data[:200]!r}",
                            resp.status,
                        )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise PeerError(node_id, f"PUT part {part_no}: {type(exc).__name__} {exc}") from None

    async def get_part(
        self,
        node_id: str,
        slot_id: int,
        path: str,
        generation: int,
        part_no: int,
        sha256: str,
    ) -> AsyncIterator[bytes]:
        """The part's bytes, streamed (the caller verifies them)."""
        api = f"{INTERNAL}/slots/{slot_id}/parts/{sha256}"
        params = {"path": path, "generation": generation, "part_no": part_no}
        url, headers = self._url_and_headers(node_id, "GET", api, params)
        try:
            async with self._session(node_id).get(
                url,
                headers=headers,
                timeout=self._part_timeout(self.settings.request_timeout_seconds),
            ) as resp:
                if resp.status != 200:
                    data = await resp.read()
                    raise PeerError(
                        node_id,
                        f"GET part {part_no}: HTTP {resp.status} {data[:200]!r}",
                        resp.status,
                    )
                async for chunk in resp.content.iter_chunked(1024 * 1024):
                    yield chunk
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise PeerError(node_id, f"GET part {part_no}: {type(exc).__name__} {exc}") from None
