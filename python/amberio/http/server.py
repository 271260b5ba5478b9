"""The server process: bootstrap, open storage, serve the RSGI app on embedded granian."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import errno
import gc
import logging
import os
import resource
import signal
import socket
from concurrent.futures import ThreadPoolExecutor

from amberio.cluster.antientropy import AntiEntropy, AntiEntropySettings
from amberio.cluster.bootstrap import Runtime, bootstrap
from amberio.cluster.liveness import run_heartbeats
from amberio.cluster.peers import Peers
from amberio.cluster.replication import Coordinator
from amberio.config import Config
from amberio.errors import ConfigError
from amberio.http import s3
from amberio.http.messages import StreamLimits
from amberio.http.router import App, Node
from amberio.logs import set_node_id
from amberio.storage.archive import Archives
from amberio.storage.blobs import BlobStore
from amberio.storage.cache import LocalCache
from amberio.storage.index import NodeIndex
from amberio.storage.scrub import Scrubber
from amberio.storage.slotconn import configure_sqlite
from amberio.storage.slots import SlotStore

log = logging.getLogger("amberio.server")

IO_THREADS = 32
"""Worker threads for fsync-bound writes and large reads (they mostly wait on the disk)."""
REQUEST_BUFFER_BYTES = 192 * 1024
"""granian's HTTP/1 read buffer per connection (its default is 408 KiB). It also sizes the
request-body chunks the app receives: at 408 KiB each chunk was its own mmap (above the
256 KiB MMAP_THRESHOLD_BYTES) next to a buffer as large, and 64 concurrent 64 MiB PUTs
peaked at ~230 MiB RSS; at 192 KiB, ~150 MiB with the same or better MB/s
(docs/performance.md §10). Request heads are far smaller (S3 caps them near 8 KiB)."""
SHUTDOWN_GRACE_SECONDS = 5.0
EXTERNAL_WRITES_INTERVAL = 1.0
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 256 * 1024
"""Allocations of this size and more come from mmap (tune_allocator). Buffers allocated per
step of a stream (READ_CHUNK, REQUEST_BUFFER_BYTES) stay below it, so they reuse heap memory."""
GC_GEN0_THRESHOLD = 10_000
GC_TUNE_DELAY = 1.0
SLOT_IDLE_SECONDS = 10.0
"""Slot databases unused this long are closed (~85 KiB each; reopening costs ~0.4 ms)."""
TRIM_AFTER_CLOSING = 16
"""Give the heap back to the system once this many slot databases were closed at once:
the memory of closed SQLite connections otherwise stays in glibc's free lists."""


def tune_allocator() -> None:
    """Serve every allocation >= 256 KiB from mmap, so freed body chunks leave the RSS.

    glibc otherwise raises its mmap threshold after the first large free and keeps later
    1 MiB chunks in its heap, where a burst of large requests would stay resident.
    """
    name = ctypes.util.find_library("c")
    if not name:
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(name)
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def trim_heap() -> None:
    """malloc_trim(0): return free heap memory of every arena to the system."""
    libc = _libc()
    if libc is not None:
        with contextlib.suppress(AttributeError):
            libc.malloc_trim(0)


def tune_collector() -> None:
    """Keep the garbage collector off what startup built, and run it less often.

    Startup objects (modules, configuration, boto3/botocore data, ...) never become
    garbage, but every full collection scanned them: 50-60 ms pauses of the event loop,
    several per minute under load, which set the p99 of small GETs. Frozen, a full
    collection only sees objects made since; young collections every 10,000 allocations
    took at most ~4 ms (docs/performance.md).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 20, 20)


def raise_fd_limit() -> None:
    """Each open slot database holds a few descriptors; 2048 slots need more than 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def check_bind(host: str, port: int) -> None:
    """Fail with one clear line (exit 2) when the address cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
    except OSError as exc:
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise ConfigError(f"cannot listen on {host}:{port}: {reason}") from None
    finally:
        probe.close()


def run(config: Config, *, current_node: str | None, bind_override: str | None) -> int:
    """Bootstrap this node and serve until SIGTERM/SIGINT. Returns the exit status."""
    # Before this process opens any SQLite connection: each open slot database then
    # costs ~88 KiB less (no bulk page-cache allocation; storage/slotconn.py).
    configure_sqlite()
    return asyncio.run(_serve(config, current_node, bind_override))


async def _serve(config: Config, current_node: str | None, bind_override: str | None) -> int:
    runtime = await bootstrap(
        config, current_node=current_node, init_only=False, bind_override=bind_override
    )
    set_node_id(runtime.node_id)
    try:
        if runtime.fresh_init:
            from amberio.cli import init_scan

            await init_scan(runtime)  # auto-init runs the archive import too (§10.4)
        check_bind(runtime.bind_host, runtime.bind_port)
        return await _serve_node(runtime)
    finally:
        await runtime.close()


def open_node(runtime: Runtime, executor: ThreadPoolExecutor, peers: Peers) -> Node:
    disks = runtime.node.disks
    slots = SlotStore(disks)
    slots.prepare()
    index = NodeIndex(os.path.join(disks[0], "amberio", "index.sqlite3"))
    placement = runtime.placement
    blobs = BlobStore(
        node_id=runtime.node_id,
        slots=slots,
        index=index,
        part_size=runtime.state.replication.part_size,
        executor=executor,
        slot_of=placement.slot_of,
        holds=lambda slot_id: placement.holds(runtime.node_id, slot_id),
        write_quorum=placement.write_quorum,
    )
    blobs.archive = Archives(runtime.state.archive_config())
    coordinator = Coordinator(
        node_id=runtime.node_id,
        placement=placement,
        blobs=blobs,
        peers=peers,
        registry=runtime.registry,
        read_consistency=runtime.config.read_consistency,
    )
    return Node(runtime, slots, blobs, coordinator, StreamLimits())


async def _serve_node(runtime: Runtime) -> int:
    # Imported here: granian is only needed once a node really serves.
    from granian.constants import Interfaces
    from granian.http import HTTP1Settings
    from granian.server.embed import Server

    tune_allocator()
    raise_fd_limit()
    loop = asyncio.get_running_loop()
    executor = ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix="amberio-io")
    peers = Peers(runtime.state, runtime.node_id, runtime.config.peers)
    node = open_node(runtime, executor, peers)
    # Once serving (its one full collection, ~50 ms, is not part of the startup time).
    loop.call_later(GC_TUNE_DELAY, tune_collector)
    s3.announce(node)  # logs whether S3 requests must be signed (contract §11)
    server = Server(
        App(node),
        address=runtime.bind_host,
        port=runtime.bind_port,
        interface=Interfaces.RSGI,
        log_enabled=False,
        backlog=1024,
        http1_settings=HTTP1Settings(max_buffer_size=REQUEST_BUFFER_BYTES),
    )
    # In-flight requests get a bounded grace period at shutdown, then are cancelled.
    server.workers_kill_timeout = int(SHUTDOWN_GRACE_SECONDS)
    stop = asyncio.Event()

    def request_stop(signum: int) -> None:
        if not stop.is_set():
            log.info("received %s: stopping", signal.Signals(signum).name)
            stop.set()
            server.stop()  # type: ignore[no-untyped-call]

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, request_stop, signum)
    heartbeats = asyncio.create_task(run_heartbeats(runtime.registry, runtime.node_id, stop))
    reconcile = loop.run_in_executor(executor, node.blobs.reconcile_index)
    reconcile.add_done_callback(_log_reconcile)
    watcher = asyncio.create_task(_watch_external_writes(node, executor, reconcile, stop))
    liveness = asyncio.create_task(node.coordinator.watch_liveness(stop))
    scrub = asyncio.create_task(Scrubber(node.slots, node.blobs.run).run_forever(stop))
    cache = _start_cache(node, stop)
    anti_entropy = AntiEntropy(
        node_id=runtime.node_id,
        placement=runtime.placement,
        blobs=node.blobs,
        peers=peers,
        settings=AntiEntropySettings.from_config(runtime.config.anti_entropy),
        alive=node.coordinator.alive,
    )
    repairs = asyncio.create_task(anti_entropy.run(stop, asyncio.wrap_future(reconcile)))
    log.info(
        "serving on http://%s:%d (cluster %s, namespace %s)",
        runtime.bind_host,
        runtime.bind_port,
        runtime.cluster_id,
        runtime.namespace,
    )
    try:
        with contextlib.suppress(TimeoutError):
            await server.serve()
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(heartbeats, timeout=SHUTDOWN_GRACE_SECONDS)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(watcher, timeout=SHUTDOWN_GRACE_SECONDS)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(liveness, timeout=SHUTDOWN_GRACE_SECONDS)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(scrub, timeout=SHUTDOWN_GRACE_SECONDS)
        if cache is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(cache, timeout=SHUTDOWN_GRACE_SECONDS)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(repairs, timeout=SHUTDOWN_GRACE_SECONDS)
        await peers.close()
        if node.blobs.archive is not None:
            await node.blobs.archive.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.wrap_future(reconcile), timeout=SHUTDOWN_GRACE_SECONDS)
        executor.shutdown(wait=True)
        node.blobs.index.close()
        node.slots.close()
        log.info("stopped")
    return 0


async def _watch_external_writes(
    node: Node,
    executor: ThreadPoolExecutor,
    initial: asyncio.Future[int],
    stop: asyncio.Event,
) -> None:
    """Keep LIST in step with rows other processes write into slot databases."""
    loop = asyncio.get_running_loop()
    with contextlib.suppress(Exception):
        await initial
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=EXTERNAL_WRITES_INTERVAL)
        if stop.is_set():
            break
        try:
            synced = await loop.run_in_executor(executor, node.blobs.sync_external_changes)
        except Exception as exc:
            log.warning("checking slot databases for external writes failed: %s", exc)
            continue
        if synced:
            log.info("re-indexed %d slot(s) new on disk or written by another process", synced)
        closed = await loop.run_in_executor(executor, node.slots.close_idle, SLOT_IDLE_SECONDS)
        if closed >= TRIM_AFTER_CLOSING:
            await loop.run_in_executor(executor, trim_heap)


def _start_cache(node: Node, stop: asyncio.Event) -> asyncio.Task[None] | None:
    """With `cache.max_bytes` set, evict archived parts over the limit (storage/cache.py)."""
    settings = node.runtime.config.cache
    if settings is None or settings.max_bytes is None:
        return None
    cache = LocalCache(node.slots, settings.max_bytes)
    node.blobs.cache = cache
    return asyncio.create_task(cache.run_forever(stop, node.blobs.run))


def _log_reconcile(fut: asyncio.Future[int]) -> None:
    if fut.cancelled():
        return
    exc = fut.exception()
    if exc is not None:
        log.error("rebuilding the listing index failed: %s", exc)
    else:
        log.info("listing index rebuilt from the slot databases (%d heads)", fut.result())
