"""What every quorum operation of a coordinator needs (contract §6): the live replicas
(registry heartbeats, refreshed every second and again before refusing), running calls on
several replicas at once with a slow-peer grace, and the heads of a path from a quorum.
`reads.ReadPath` (GET/HEAD/LIST) and `replication.Coordinator` (PUT/DELETE) build on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from amberio.cluster.peers import PeerError, Peers
from amberio.cluster.placement import Placement
from amberio.cluster.registry import Registry
from amberio.errors import QuorumNotReached
from amberio.storage.blobs import (
    BlobStore,
)
from amberio.storage.heads import Head

log = logging.getLogger("amberio.cluster.quorum")

T = TypeVar("T")
LIVENESS_REFRESH_SECONDS = 1.0


class QuorumBase:
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
