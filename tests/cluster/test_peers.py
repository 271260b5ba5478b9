"""Node-to-node calls use the configured timeouts and retries (config section `peers`)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from amberio.cluster.peers import PeerError, Peers
from amberio.cluster.state import BootstrapState, NodeSpec, ReplicationSpec
from amberio.config import PeersConfig


class Silent:
    """Accepts connections, reads what it is sent, never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port: int = self.sock.getsockname()[1]
        self.accepted = 0
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self.conns.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.conns:
            conn.close()


@pytest.fixture
def silent() -> Iterator[Silent]:
    server = Silent()
    yield server
    server.close()


def peers_to(port: int, settings: PeersConfig | None) -> Peers:
    state = BootstrapState(
        cluster_id="c",
        namespace="n",
        nodes=[
            NodeSpec(node_id="me", bind_addr="127.0.0.1:1", advertise_addr="127.0.0.1:1", disks=[]),
            NodeSpec(
                node_id="hung",
                bind_addr=f"127.0.0.1:{port}",
                advertise_addr=f"127.0.0.1:{port}",
                disks=[],
            ),
        ],
        replication=ReplicationSpec(min_write_replicas=1, total_slots=8, replicas=2, part_size=1),
    )
    return Peers(state, "me", settings)


def test_defaults_are_the_former_constants() -> None:
    peers = peers_to(1, None)
    assert peers.settings == PeersConfig()
    assert peers.settings.request_timeout_seconds == 5.0
    assert peers.settings.connect_timeout_seconds == 2.0


def test_a_hung_peer_costs_the_configured_request_timeout(silent: Silent) -> None:
    settings = PeersConfig(request_timeout_seconds=0.4, retries=3)

    async def go() -> float:
        peers = peers_to(silent.port, settings)
        t0 = time.monotonic()
        try:
            with pytest.raises(PeerError, match="TimeoutError"):
                await peers.get_head("hung", 0, "p")
            return time.monotonic() - t0
        finally:
            await peers.close()

    took = asyncio.run(go())
    assert 0.35 <= took < 2.0
    assert silent.accepted == 1  # a timed-out call is not retried


def test_retries_of_a_refused_read_follow_the_setting() -> None:
    with socket.socket() as probe:  # a port where nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def attempts(retries: int) -> int:
        peers = peers_to(port, PeersConfig(retries=retries))
        calls = 0
        original = peers._session

        def counting(node_id: str):  # type: ignore[no-untyped-def]
            nonlocal calls
            calls += 1
            return original(node_id)

        peers._session = counting  # type: ignore[method-assign]
        try:
            with pytest.raises(PeerError):
                await peers.get_head("hung", 0, "p")
        finally:
            await peers.close()
        return calls

    assert asyncio.run(attempts(0)) == 1
    assert asyncio.run(attempts(2)) == 3
