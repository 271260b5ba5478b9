from __future__ import annotations

import asyncio
import logging

import pytest

from amberio.cluster.liveness import node_statuses, run_heartbeats
from amberio.cluster.registry import RedisRegistry, Registry
from amberio.cluster.state import BootstrapState
from amberio.errors import RegistryUnavailable

from .test_registry import make_state


class FlakyRegistry(Registry):
    """In-memory registry whose heartbeat fails while `down` is set."""

    def __init__(self) -> None:
        self.down = False
        self.beats = 0
        self.alive: set[str] = set()
        self.unregistered: list[str] = []

    @property
    def description(self) -> str:
        return "flaky"

    async def load_bootstrap(self) -> BootstrapState | None:
        return None

    async def publish_bootstrap(self, state: BootstrapState) -> BootstrapState:
        return state

    async def heartbeat(self, node_id: str, ttl_seconds: float) -> None:
        if self.down:
            raise RegistryUnavailable("registry unreachable at redis://x:1: refused")
        self.beats += 1
        self.alive.add(node_id)

    async def unregister(self, node_id: str) -> None:
        self.unregistered.append(node_id)
        self.alive.discard(node_id)

    async def live_nodes(self) -> set[str]:
        if self.down:
            raise RegistryUnavailable("registry unreachable at redis://x:1: refused")
        return set(self.alive)

    async def close(self) -> None:
        return None


def test_heartbeats_survive_registry_errors(caplog: pytest.LogCaptureFixture) -> None:
    reg = FlakyRegistry()

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(run_heartbeats(reg, "node-1", stop, interval=0.02, ttl=1))
        await asyncio.sleep(0.1)
        assert reg.beats >= 2
        reg.down = True
        await asyncio.sleep(0.1)
        assert not task.done()
        reg.down = False
        before = reg.beats
        await asyncio.sleep(0.1)
        assert reg.beats > before
        stop.set()
        await asyncio.wait_for(task, 1)

    with caplog.at_level(logging.DEBUG, logger="amberio"):
        asyncio.run(scenario())
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # one warning when it starts failing, not one per beat
    assert "heartbeat" in warnings[0].getMessage()
    assert any("works again" in m for m in caplog.messages)
    assert reg.unregistered == ["node-1"]


def test_node_statuses_fallbacks() -> None:
    state = make_state("ns")
    reg = FlakyRegistry()

    async def scenario() -> None:
        reg.alive = {"node-3"}
        statuses = await node_statuses(state, reg, self_node="node-1")
        assert statuses == [
            ("node-1", "127.0.0.1:19081", "healthy"),
            ("node-2", "127.0.0.1:19082", "unreachable"),
            ("node-3", "127.0.0.1:19083", "healthy"),
        ]
        reg.down = True
        statuses = await node_statuses(state, reg, self_node="node-2")
        assert [s[2] for s in statuses] == ["unreachable", "healthy", "unreachable"]

    asyncio.run(scenario())


def test_heartbeats_with_redis(redis_url: str, namespace: str) -> None:
    state = make_state(namespace)

    async def scenario() -> None:
        regs = [await RedisRegistry.connect(redis_url, namespace) for _ in range(3)]
        try:
            await regs[0].publish_bootstrap(state)
            stops = [asyncio.Event() for _ in regs]
            tasks = [
                asyncio.create_task(run_heartbeats(r, f"node-{i + 1}", s, interval=0.05, ttl=0.5))
                for i, (r, s) in enumerate(zip(regs, stops, strict=True))
            ]
            await asyncio.sleep(0.2)
            statuses = await node_statuses(state, regs[0])
            assert [s[2] for s in statuses] == ["healthy"] * 3
            # node-2 stops cleanly: gone at once
            stops[1].set()
            await tasks[1]
            statuses = await node_statuses(state, regs[0])
            assert [s[2] for s in statuses] == ["healthy", "unreachable", "healthy"]
            # node-3 "crashes" (no unregister): gone once its TTL expires
            tasks[2].cancel()
            await asyncio.sleep(0.7)
            statuses = await node_statuses(state, regs[0])
            assert [s[2] for s in statuses] == ["healthy", "unreachable", "unreachable"]
            stops[0].set()
            await tasks[0]
        finally:
            for r in regs:
                await r.close()

    asyncio.run(scenario())
