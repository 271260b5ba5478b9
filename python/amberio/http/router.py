"""The RSGI application: one entry point that routes every request by path prefix."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from amberio.errors import AmberioError, MethodNotAllowed, NotFound
from amberio.http import internal, native, s3
from amberio.http.messages import Request, StreamLimits, send_error, send_json

if TYPE_CHECKING:
    from amberio.cluster.bootstrap import Runtime
    from amberio.cluster.replication import Coordinator
    from amberio.storage.blobs import BlobStore
    from amberio.storage.slots import SlotStore

log = logging.getLogger("amberio.http")


class Node:
    """Everything a handler needs about the running node."""

    def __init__(
        self,
        runtime: Runtime,
        slots: SlotStore,
        blobs: BlobStore,
        coordinator: Coordinator,
        limits: StreamLimits,
    ) -> None:
        self.runtime = runtime
        self.node_id = runtime.node_id
        self.slots = slots
        self.blobs = blobs
        self.coordinator = coordinator
        self.limits = limits


class App:
    """The RSGI app granian calls for each request."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def __rsgi__(self, scope: Any, proto: Any) -> Any:
        return self.handle(Request(scope, proto))

    async def handle(self, req: Request) -> None:
        try:
            await self.route(req)
        except AmberioError as err:
            self._answer_error(req, err)
        except Exception:
            log.exception("%s %s failed", req.method, req.path)
            self._answer_error(req, AmberioError("internal error; see the server log"))

    def _answer_error(self, req: Request, err: AmberioError) -> None:
        try:
            send_error(req, err)
        except Exception:
            # A response was already started: nothing more can be said to this client.
            log.debug("%s %s: could not send error %s", req.method, req.path, err.code)

    async def route(self, req: Request) -> None:
        path = req.path
        if path in ("/health", "/_/health"):
            if req.method not in ("GET", "HEAD"):
                raise MethodNotAllowed(f"{req.method} is not allowed on {path}")
            send_json(req, 200, {"status": "ok"})
        elif path == native.PREFIX or path.startswith(native.PREFIX + "/"):
            await native.handle(self.node, req)
        elif path == internal.PREFIX or path.startswith(internal.PREFIX + "/"):
            await internal.handle(self.node, req)
        elif path.startswith("/_/"):
            raise NotFound(f"no such route: {path}")
        else:
            await s3.handle(self.node, req)
