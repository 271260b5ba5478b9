"""Liveness (contract §3): heartbeats in the registry, and node statuses for `GET /nodes`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final, Literal

from amberio.cluster.registry import Registry
from amberio.cluster.state import BootstrapState

log = logging.getLogger("amberio.cluster.liveness")

NodeStatus = Literal["healthy", "unreachable"]
HEARTBEAT_INTERVAL: Final = 1.0
HEARTBEAT_TTL: Final = 5.0


async def run_heartbeats(
    registry: Registry,
    node_id: str,
    stop: asyncio.Event,
    interval: float = HEARTBEAT_INTERVAL,
    ttl: float = HEARTBEAT_TTL,
) -> None:
    """Refresh this node's heartbeat every `interval` s until `stop` is set.

    Beats once at once. Registry errors are logged (a warning when they start, info when the
    registry answers again) and never end the loop. On stop, the heartbeat is removed so
    peers see the node go away at once.
    """
    failing = False
    while not stop.is_set():
        try:
            await registry.heartbeat(node_id, ttl)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not failing:
                log.warning("heartbeat to the registry failed (will retry): %s", exc)
            else:
                log.debug("heartbeat still failing: %s", exc)
            failing = True
        else:
            if failing:
                log.info("heartbeat to the registry works again")
            failing = False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
    try:
        await asyncio.wait_for(registry.unregister(node_id), timeout=2.0)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.debug("could not remove the heartbeat at shutdown: %s", exc)


async def node_statuses(
    state: BootstrapState, registry: Registry, *, self_node: str | None = None
) -> list[tuple[str, str, NodeStatus]]:
    """`(node_id, advertise_addr, status)` for every node of the cluster, sorted by id.

    A node is healthy when its heartbeat is fresh. `self_node` (the asking node, which is
    evidently up) is always healthy; when the registry cannot be read, the others are
    reported unreachable.
    """
    try:
        live = await registry.live_nodes()
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.warning("cannot read node liveness from the registry: %s", exc)
        live = set()
    if self_node is not None:
        live.add(self_node)
    return [
        (n.node_id, n.advertise_addr, "healthy" if n.node_id in live else "unreachable")
        for n in sorted(state.nodes, key=lambda n: n.node_id)
    ]
