"""SocketWatch: finding a response's connection socket by its peer address."""

from __future__ import annotations

import socket

from amberio.http.backpressure import SocketWatch


def test_finds_the_connection_by_peer_and_counts_what_was_written() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    clients = [socket.create_connection(server.getsockname()) for _ in range(3)]
    accepted = [server.accept()[0] for _ in clients]
    try:
        host, port = clients[1].getsockname()
        watch = SocketWatch.find(f"{host}:{port}")
        assert watch is not None
        try:
            peer = accepted[1].getpeername()
            assert watch._sock.getpeername() == peer
            before = watch.written()
            accepted[1].sendall(b"x" * 1000)
            assert watch.written() - before == 1000
            assert watch.pending(1000) == 0
        finally:
            watch.close()
        assert SocketWatch.find("127.0.0.1:1") is None
        assert SocketWatch.find("not an address") is None
    finally:
        for s in (*clients, *accepted, server):
            s.close()
