"""Answers to operations that may run for a long time (CompleteMultipartUpload, CopyObject).

As S3 does: when the work takes longer than a few seconds, the 200 status and the XML
declaration are sent at once and a space every few seconds keeps the connection alive; the
result document (or an `<Error>` document, which SDKs look for in these 200 answers) follows
when the work is done.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Final
from xml.etree.ElementTree import Element

from amberio.errors import AmberioError
from amberio.http.s3 import xml
from amberio.http.s3.context import XML_CONTENT_TYPE, Context
from amberio.http.s3.errors import S3Error, from_amberio

log = logging.getLogger("amberio.s3")

FIRST_WAIT: Final = 5.0
KEEPALIVE_EVERY: Final = 5.0


async def respond(
    ctx: Context, work: Awaitable[Element], headers: list[tuple[str, str]] | None = None
) -> None:
    task = asyncio.ensure_future(work)
    # Keep a reference: the work finishes (and commits) even if the client goes away.
    ctx.gateway.background.add(task)
    task.add_done_callback(ctx.gateway.background.discard)
    done, _ = await asyncio.wait({task}, timeout=FIRST_WAIT)
    if done:
        ctx.send_xml(200, task.result(), headers)
        return
    ctx.responded = True
    transport = ctx.req.proto.response_stream(
        200, [("content-type", XML_CONTENT_TYPE), *ctx.base_headers(), *(headers or [])]
    )
    await transport.send_bytes(b'<?xml version="1.0" encoding="UTF-8"?>\n')
    while not task.done():
        done, _ = await asyncio.wait({task}, timeout=KEEPALIVE_EVERY)
        if not done:
            await transport.send_bytes(b" ")
    try:
        root = task.result()
    except AmberioError as exc:
        err = from_amberio(exc)
        root = ctx.error_document(err)
    except Exception:
        log.exception("%s %s failed after the answer started", ctx.req.method, ctx.req.path)
        root = ctx.error_document(S3Error("InternalError", "we encountered an internal error"))
    document = xml.to_bytes(root)
    await transport.send_bytes(document.split(b"\n", 1)[1])
