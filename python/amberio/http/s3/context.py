"""Per-node gateway state and the per-request context handlers receive."""

from __future__ import annotations

import asyncio
import logging
import secrets
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final
from xml.etree.ElementTree import Element

from amberio.errors import NotFound
from amberio.http.messages import Request
from amberio.http.s3 import xml
from amberio.http.s3.auth import Signed, Verifier
from amberio.http.s3.body import BodySpec, Payload, read_all
from amberio.http.s3.errors import S3Error

if TYPE_CHECKING:
    from amberio.cluster.replication import Coordinator
    from amberio.http.router import Node
    from amberio.storage.blobs import BlobStore, ReadPlan

log = logging.getLogger("amberio.s3")

XML_CONTENT_TYPE: Final = "application/xml"


@dataclass(slots=True)
class Gateway:
    """What the S3 gateway keeps per node: the access keys and housekeeping timestamps."""

    verifier: Verifier
    last_sweep: float = 0.0
    sweeping: bool = False
    background: set[asyncio.Future[Any]] = field(default_factory=set)


_gateways: weakref.WeakKeyDictionary[Node, Gateway] = weakref.WeakKeyDictionary()


def gateway_for(node: Node) -> Gateway:
    gateway = _gateways.get(node)
    if gateway is None:
        config = node.runtime.config.s3
        credentials = (
            {c.access_key_id: c.secret_access_key for c in config.credentials}
            if (config is not None)
            else {}
        )
        gateway = Gateway(Verifier(credentials))
        _gateways[node] = gateway
        if credentials:
            log.info(
                "S3 gateway: SigV4 verified for %d access key(s) (header auth and presigned URLs)",
                len(credentials),
            )
        else:
            log.warning(
                "S3 gateway: no s3.credentials configured, so S3 requests are accepted "
                "unsigned and signatures are not checked; configure s3.credentials to "
                "require SigV4"
            )
    return gateway


def new_request_id() -> str:
    return secrets.token_hex(8).upper()


@dataclass(slots=True)
class Context:
    node: Node
    req: Request
    gateway: Gateway
    request_id: str
    signed: Signed | None = None
    responded: bool = False
    body_consumed: bool = False

    def body(self) -> AsyncIterator[bytes]:
        """The raw request body (iterate once); remembers whether it was read to the end."""
        return self._read_body()

    async def _read_body(self) -> AsyncIterator[bytes]:
        async for chunk in self.req.body():
            yield chunk
        self.body_consumed = True

    def payload(
        self, spec: BodySpec, *, on_verified: Callable[[Payload], None] | None = None
    ) -> Payload:
        """The decoded, verified body of this request (see body.Payload)."""
        return Payload(
            self.req,
            spec,
            signer=self.signed,
            executor=self.blobs.executor,
            on_verified=on_verified,
            source=self.body(),
        )

    async def read_all(self, limit: int, *, checksum_headers: bool = True) -> bytes:
        """The whole (small) decoded body, verified."""
        return await read_all(
            self.req,
            signer=self.signed,
            limit=limit,
            executor=self.blobs.executor,
            source=self.body(),
            checksum_headers=checksum_headers,
        )

    def _connection_headers(self) -> list[tuple[str, str]]:
        """`connection: close` when answering before the request body was read.

        A client that sent `Expect: 100-continue` and gets a final answer does not send its
        body, but the HTTP server would then take the next request's first bytes for it; a
        client that did send it would have them taken for the next request. Closing the
        connection is the only answer that is right either way.
        """
        if self.body_consumed:
            return []
        req = self.req
        length = req.header("content-length")
        has_body = (length is not None and length.strip() not in ("", "0")) or (
            req.header("transfer-encoding") is not None
        )
        return [("connection", "close")] if has_body else []

    @property
    def blobs(self) -> BlobStore:
        return self.node.blobs

    @property
    def store(self) -> Coordinator:
        """Quorum reads and writes across the slot's replicas (contract §6)."""
        return self.node.coordinator

    async def read_plan(self, path: str) -> ReadPlan | None:
        """The winning live head of `path` as a whole-blob read plan; None when absent."""
        try:
            return await self.store.plan_read(path, None)
        except NotFound:
            return None

    def base_headers(self) -> list[tuple[str, str]]:
        return [
            ("x-amz-request-id", self.request_id),
            ("x-amz-id-2", self.request_id),
            *self._connection_headers(),
        ]

    def send_xml(
        self, status: int, root: Element, headers: list[tuple[str, str]] | None = None
    ) -> None:
        body = xml.to_bytes(root)
        all_headers = [("content-type", XML_CONTENT_TYPE), *self.base_headers(), *(headers or [])]
        self.responded = True
        if self.req.method == "HEAD":
            self.req.proto.response_empty(status, all_headers)
        else:
            self.req.proto.response_bytes(status, all_headers, body)

    def error_document(self, err: S3Error) -> Element:
        """S3's `<Error>` document for `err`, naming this request's path and id."""
        root = xml.element("Error", namespace=False)
        xml.sub(root, "Code", err.s3_code)
        xml.sub(root, "Message", err.message)
        for name, value in err.fields.items():
            xml.sub(root, name, xml.error_text(value))
        xml.sub(root, "Resource", xml.error_text(self.req.path))
        xml.sub(root, "RequestId", self.request_id)
        return root

    def send_empty(self, status: int, headers: list[tuple[str, str]] | None = None) -> None:
        self.responded = True
        self.req.proto.response_empty(status, [*self.base_headers(), *(headers or [])])
