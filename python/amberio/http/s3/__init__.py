"""The S3 gateway (contract §11): path-style `/{bucket}` and `/{bucket}/{key}` on the API port.

Not built yet: every S3 request answers 501 `NotImplemented` with an S3 error document.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape

from amberio.http.messages import Request

if TYPE_CHECKING:
    from amberio.http.router import Node

_NOT_IMPLEMENTED = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    "<Error><Code>NotImplemented</Code><Message>The S3 gateway is not part of this build yet; "
    "use the native API under /_/api/v1</Message><Resource>{resource}</Resource>"
    "<RequestId>{request_id}</RequestId></Error>"
)


async def handle(node: Node, req: Request) -> None:
    request_id = uuid.uuid4().hex[:16].upper()
    body = _NOT_IMPLEMENTED.format(resource=escape(req.path), request_id=request_id).encode()
    req.proto.response_bytes(
        501,
        [("content-type", "application/xml"), ("x-amz-request-id", request_id)],
        body,
    )
