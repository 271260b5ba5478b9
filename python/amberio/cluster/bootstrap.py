"""Init and start-up (contract §3).

`await bootstrap(config, current_node=..., init_only=...)`:

1. open the registry (redis: its URL; local: the file on the node's first disk);
2. load the bootstrap state; if none exists, validate `initial_cluster`, build a state and
   publish it first-wins, then use whatever state won;
3. find this node in that state (never in the local file);
4. check or create `<disk>/amberio/identity.json` on each of the node's disks.

The same steps run for `--init` and for a normal start (auto-init): a node that was
initialized once needs only `registry` and `current_node` to be right, and never waits for
its peers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import msgspec

from amberio.cluster.placement import Placement
from amberio.cluster.registry import Registry, atomic_write, open_registry
from amberio.cluster.state import (
    STATE_FORMAT,
    BootstrapState,
    NodeSpec,
    ReplicationSpec,
    decode_state,
    encode_state,
    utc_now,
)
from amberio.config import (
    Config,
    InitialCluster,
    is_loopback_host,
    is_wildcard_host,
    parse_host_port,
)
from amberio.errors import ConfigError

__all__ = [
    "IDENTITY_FILE",
    "BootstrapState",
    "DiskIdentity",
    "NodeSpec",
    "ReplicationSpec",
    "Runtime",
    "bootstrap",
    "build_state",
    "decode_state",
    "encode_state",
    "ensure_disk_identities",
    "resolve_node_id",
    "save_state_copies",
]

log = logging.getLogger("amberio.cluster.bootstrap")

IDENTITY_DIR: Final = "amberio"
IDENTITY_FILE: Final = "identity.json"
STATE_COPY_FILE: Final = "bootstrap.json"


class DiskIdentity(msgspec.Struct, frozen=True, kw_only=True):
    """`<disk>/amberio/identity.json`: which node, namespace and cluster own the disk."""

    node_id: str
    namespace: str
    cluster_id: str
    disk_index: int
    created_at: str = ""


@dataclass(slots=True)
class Runtime:
    """What a started (or just initialized) node knows. Close the registry when done."""

    config: Config
    state: BootstrapState
    node: NodeSpec
    registry: Registry
    bind_host: str
    bind_port: int
    fresh_init: bool
    """True when this call initialized at least one of the node's disks."""
    published: bool
    """True when this call's state won the publish (a new cluster was created)."""
    placement: Placement

    @property
    def node_id(self) -> str:
        return self.node.node_id

    @property
    def namespace(self) -> str:
        return self.state.namespace

    @property
    def cluster_id(self) -> str:
        return self.state.cluster_id

    async def close(self) -> None:
        await self.registry.close()


def resolve_node_id(config: Config, current_node: str | None) -> str:
    """`--current-node` if given, else `current_node` from the file; ConfigError if neither."""
    node_id = current_node or config.current_node
    if not node_id:
        raise ConfigError(
            f"{config.source}: current_node: not set (set it in the file or pass --current-node)"
        )
    return node_id


def build_state(
    config: Config,
    cluster: InitialCluster,
    *,
    cwd: str | None = None,
    cluster_id: str | None = None,
) -> BootstrapState:
    """A new bootstrap state from a validated `initial_cluster` (disks made absolute)."""
    base = cwd or os.getcwd()
    nodes = [
        NodeSpec(
            node_id=n.node_id,
            bind_addr=n.bind_addr,
            advertise_addr=n.effective_advertise_addr,
            disks=[_absolute(d.path, base) for d in n.disks],
        )
        for n in cluster.nodes
    ]
    rep = cluster.replication
    state = BootstrapState(
        cluster_id=cluster_id or str(uuid.uuid4()),
        namespace=config.registry.namespace,
        nodes=nodes,
        replication=ReplicationSpec(
            min_write_replicas=rep.min_write_replicas,
            total_slots=rep.total_slots,
            replicas=rep.replicas if rep.replicas is not None else min(3, len(nodes)),
            part_size=rep.part_size,
        ),
        archive=msgspec.to_builtins(config.archive) if config.archive is not None else None,
        cluster_secret=config.cluster_secret,
        created_at=utc_now(),
        format=STATE_FORMAT,
    )
    return state.validate()


async def bootstrap(
    config: Config,
    *,
    current_node: str | None = None,
    init_only: bool = False,
    bind_override: str | None = None,
) -> Runtime:
    """Load (or create) the cluster's state and this node's disks; see the module doc.

    `bind_override` (`--bind`) replaces the listening address from the state. On error the
    registry is closed and ConfigError / RegistryUnavailable propagates.
    """
    node_id = resolve_node_id(config, current_node)
    bind_addr_override: tuple[str, int] | None = None
    if bind_override is not None:
        try:
            bind_addr_override = parse_host_port(bind_override)
        except ValueError as exc:
            raise ConfigError(f"--bind: {exc}") from None

    registry = await open_registry(config, node_id)
    try:
        state, published = await _load_or_publish(config, registry, node_id)
        node = state.node(node_id)
        if node is None:
            raise ConfigError(
                f"unknown node id {node_id!r}; cluster {state.cluster_id} in namespace "
                f"{state.namespace!r} has {state.node_ids()!r}"
            )
        created = await asyncio.to_thread(ensure_disk_identities, state, node)
        await asyncio.to_thread(save_state_copies, state, node)
        if bind_addr_override is not None:
            bind_host, bind_port = bind_addr_override
        else:
            bind_host, bind_port = parse_host_port(node.bind_addr)
        _log_start(state, node, created, published, init_only, bind_host, bind_port)
        return Runtime(
            config=config,
            state=state,
            node=node,
            registry=registry,
            bind_host=bind_host,
            bind_port=bind_port,
            fresh_init=bool(created),
            published=published,
            placement=Placement.from_state(state),
        )
    except BaseException:
        await registry.close()
        raise


async def _load_or_publish(
    config: Config, registry: Registry, node_id: str
) -> tuple[BootstrapState, bool]:
    state = await registry.load_bootstrap()
    published = False
    if state is None:
        saved, initialized = await asyncio.to_thread(_find_saved_state, config, node_id)
        if saved is not None:
            # The registry lost the state (e.g. a Redis restarted without persistence), but
            # this node kept a copy: publish that again rather than founding a new cluster.
            log.warning(
                "%s has no bootstrap state for namespace %r; re-publishing the copy of "
                "cluster %s saved on this node's disk",
                registry.description,
                config.registry.namespace,
                saved.cluster_id,
            )
            state = await registry.publish_bootstrap(saved)
        elif initialized is not None:
            disk, identity = initialized
            raise ConfigError(
                f"disk {disk} was initialized for cluster {identity.cluster_id} of namespace "
                f"{identity.namespace!r}, but {registry.description} holds no bootstrap state "
                "for it and no copy was found (was the registry reset?); refusing to create a "
                "new cluster over existing data: use another disk or move its data away"
            )
        else:
            cluster = config.parse_initial_cluster()
            if cluster.node(node_id) is None:
                raise ConfigError(
                    f"{config.source}: unknown node id {node_id!r}; initial_cluster has "
                    f"{[n.node_id for n in cluster.nodes]!r}"
                )
            if config.registry.backend == "local" and len(cluster.nodes) > 1:
                raise ConfigError(
                    f"{config.source}: initial_cluster.nodes: registry.backend local serves a "
                    f"single node, but {len(cluster.nodes)} are listed (use backend redis)"
                )
            candidate = build_state(config, cluster)
            candidate_node = candidate.node(node_id)
            assert candidate_node is not None
            # Refuse before publishing when a disk already belongs elsewhere, so that a
            # mistake does not leave a stray bootstrap state behind in the registry.
            await asyncio.to_thread(
                ensure_disk_identities, candidate, candidate_node, create=False, check_cluster=False
            )
            state = await registry.publish_bootstrap(candidate)
            published = state.cluster_id == candidate.cluster_id
            if published:
                log.info(
                    "published the bootstrap state of new cluster %s to %s",
                    state.cluster_id,
                    registry.description,
                )
            else:
                log.info(
                    "another init won: using cluster %s from %s",
                    state.cluster_id,
                    registry.description,
                )
                if _comparable(candidate) != _comparable(state):
                    log.warning(
                        "the local initial_cluster differs from the winning bootstrap state; "
                        "running with the registry's settings"
                    )
    if state.namespace != config.registry.namespace:
        raise ConfigError(
            f"{registry.description} holds namespace {state.namespace!r}, but "
            f"{config.source} says registry.namespace {config.registry.namespace!r}"
        )
    if (
        config.cluster_secret is not None
        and state.cluster_secret is not None
        and config.cluster_secret != state.cluster_secret
    ):
        log.warning("cluster_secret differs from the one stored at init; using the stored secret")
    elif config.cluster_secret is not None and state.cluster_secret is None:
        log.warning(
            "cluster_secret is set, but the cluster was initialized without one; the "
            "internal API stays unsigned"
        )
    return state, published


def ensure_disk_identities(
    state: BootstrapState, node: NodeSpec, *, create: bool = True, check_cluster: bool = True
) -> list[str]:
    """Check each disk's identity file; create missing ones. Returns the disks initialized.

    A disk that belongs to another node, namespace or cluster is refused (ConfigError).
    With `create=False` (a dry run before publishing a new state) nothing is written, and
    `check_cluster=False` skips the cluster id (a candidate's id is new by definition).
    """
    created: list[str] = []
    for index, disk in enumerate(node.disks):
        path = Path(disk) / IDENTITY_DIR / IDENTITY_FILE
        expected = DiskIdentity(
            node_id=node.node_id,
            namespace=state.namespace,
            cluster_id=state.cluster_id,
            disk_index=index,
            created_at=utc_now(),
        )
        if Path(disk).exists() and not Path(disk).is_dir():
            raise ConfigError(f"disk {disk}: exists and is not a directory")
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            data = None
        except OSError as exc:
            raise ConfigError(f"disk {disk}: cannot read {path}: {exc.strerror}") from None
        if data is None:
            if not create:
                continue
            try:
                atomic_write(path, msgspec.json.encode(expected))
            except OSError as exc:
                raise ConfigError(
                    f"disk {disk}: cannot initialize {path}: {exc.strerror or exc}"
                ) from None
            created.append(disk)
            log.info("initialized disk %s (#%d of node %s)", disk, index, node.node_id)
            continue
        try:
            found = msgspec.json.decode(data, type=DiskIdentity)
        except msgspec.DecodeError as exc:
            raise ConfigError(f"disk {disk}: invalid identity file {path}: {exc}") from None
        _check_identity(disk, path, found, expected, check_cluster=check_cluster)
    return created


def save_state_copies(state: BootstrapState, node: NodeSpec) -> None:
    """Keep a copy of the bootstrap state in `<disk>/amberio/bootstrap.json` on every disk.

    Only used when the registry has lost the state: the node publishes the copy again
    (first wins) instead of founding a new cluster over its data. Failures are logged.
    """
    data = encode_state(state)
    for disk in node.disks:
        path = Path(disk) / IDENTITY_DIR / STATE_COPY_FILE
        try:
            if path.is_file() and path.read_bytes() == data:
                continue
            atomic_write(path, data)
        except OSError as exc:
            log.warning("cannot save a copy of the bootstrap state to %s: %s", path, exc)


def _find_saved_state(
    config: Config, node_id: str
) -> tuple[BootstrapState | None, tuple[str, DiskIdentity] | None]:
    """Look at the node's disks (as the config lists them) for a saved state or identity.

    Returns (a saved state of this namespace naming this node, or None;
    (disk, identity) of a disk initialized for this namespace, or None).
    """
    disks = config.raw_node_disks(node_id) or []
    namespace = config.registry.namespace
    initialized: tuple[str, DiskIdentity] | None = None
    for raw in disks:
        disk = _absolute(raw, os.getcwd())
        base = Path(disk) / IDENTITY_DIR
        try:
            identity = msgspec.json.decode((base / IDENTITY_FILE).read_bytes(), type=DiskIdentity)
        except (OSError, msgspec.DecodeError):
            continue
        if identity.namespace != namespace:
            continue  # refused later, with a precise message, by the identity check
        if initialized is None:
            initialized = (disk, identity)
        try:
            saved = decode_state((base / STATE_COPY_FILE).read_bytes(), origin=str(base))
        except (OSError, ConfigError) as exc:
            log.debug("no usable state copy on %s: %s", disk, exc)
            continue
        if (
            saved.namespace == namespace
            and saved.cluster_id == identity.cluster_id
            and saved.node(node_id) is not None
        ):
            return saved, initialized
    return None, initialized


def _check_identity(
    disk: str, path: Path, found: DiskIdentity, expected: DiskIdentity, *, check_cluster: bool
) -> None:
    hint = f"(identity file {path}; use another disk or move its data away)"
    if found.namespace != expected.namespace:
        raise ConfigError(
            f"disk {disk} belongs to namespace {found.namespace!r}, not "
            f"{expected.namespace!r} {hint}"
        )
    if check_cluster and found.cluster_id != expected.cluster_id:
        raise ConfigError(
            f"disk {disk} belongs to cluster {found.cluster_id} of namespace "
            f"{found.namespace!r}, but the registry holds cluster {expected.cluster_id} "
            f"(was the registry reset?) {hint}"
        )
    if found.node_id != expected.node_id:
        raise ConfigError(
            f"disk {disk} belongs to node {found.node_id!r}, not {expected.node_id!r} {hint}"
        )
    if found.disk_index != expected.disk_index:
        raise ConfigError(
            f"disk {disk} is disk #{found.disk_index} of node {found.node_id!r}, but the "
            f"bootstrap state lists it as #{expected.disk_index} {hint}"
        )


def _log_start(
    state: BootstrapState,
    node: NodeSpec,
    created: list[str],
    published: bool,
    init_only: bool,
    bind_host: str,
    bind_port: int,
) -> None:
    what = "initialized" if created or published else "already initialized"
    log.info(
        "node %s %s: cluster %s, namespace %r, %d node(s), W=%d, R=%d, %d slots, %d disk(s)%s",
        node.node_id,
        what,
        state.cluster_id,
        state.namespace,
        len(state.nodes),
        state.replication.min_write_replicas,
        state.effective_replicas,
        state.replication.total_slots,
        len(node.disks),
        "" if init_only else f", binding {bind_host}:{bind_port}",
    )
    if not init_only and state.cluster_secret is None and not is_loopback_host(bind_host):
        kind = "all interfaces" if is_wildcard_host(bind_host) else "a non-loopback address"
        log.warning(
            "binding %s (%s:%d) without a cluster secret: the internal API is open to anyone "
            "who can reach this port (set cluster_secret at init)",
            kind,
            bind_host,
            bind_port,
        )


def _comparable(state: BootstrapState) -> bytes:
    return encode_state(msgspec.structs.replace(state, cluster_id="", created_at=""))


def _absolute(path: str, base: str) -> str:
    return os.path.normpath(os.path.join(base, os.path.expanduser(path)))
