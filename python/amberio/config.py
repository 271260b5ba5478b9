"""The configuration file (contract §2), parsed into typed msgspec structs.

`load_config(path)` reads the YAML file; `embedded_config(data_dir, bind)` builds the
no-config default of §1. Every problem is a `ConfigError` whose one-line message names the
file and the key path (`bad.yaml: initial_cluster.nodes[1].bind_addr: expected str, got int`).

`initial_cluster` is kept as raw data: it is read only by the init that publishes a new
bootstrap state (§3), so a node that was initialized once must boot even if that section was
later changed to nonsense. `Config.parse_initial_cluster()` validates it strictly when needed.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlsplit

import msgspec
import yaml

from amberio.config_errors import error, type_name, validation_error, yaml_reason
from amberio.errors import ConfigError

RegistryBackend = Literal["redis", "local"]
ArchiveType = Literal["s3", "redis"]
ArchiveLayout = Literal["mirror", "versioned"]
ReadConsistency = Literal["quorum", "local"]

DEFAULT_BIND: Final = "127.0.0.1:19080"
DEFAULT_NAMESPACE: Final = "default"
DEFAULT_NODE_ID: Final = "node-1"
DEFAULT_DATA_DIR: Final = "./amberio-data"
DEFAULT_TOTAL_SLOTS: Final = 2048
DEFAULT_PART_SIZE: Final = 8 * 1024 * 1024
DEFAULT_REPLICAS: Final = 3
MIN_PART_SIZE: Final = 64 * 1024
MAX_PART_SIZE: Final = 5 * 1024 * 1024 * 1024
MAX_TOTAL_SLOTS: Final = 1 << 20
EMBEDDED_SOURCE: Final = "<embedded default>"

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
NonNegativeFloat = Annotated[float, msgspec.Meta(ge=0)]
NonEmptyStr = Annotated[str, msgspec.Meta(min_length=1)]

# Node ids appear in HTTP headers, Redis keys and file names; namespaces in Redis keys and
# identity files. Keep both to a safe alphabet.
_NODE_ID_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_NAMESPACE_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_HOSTNAME_RE: Final = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of every config struct: unknown keys are errors."""


# --- registry -------------------------------------------------------------------------------


class RegistryRedisConfig(_Section):
    url: NonEmptyStr
    pool_size: PositiveInt = 10


class RegistryConfig(_Section):
    backend: RegistryBackend
    namespace: NonEmptyStr = DEFAULT_NAMESPACE
    redis: RegistryRedisConfig | None = None


# --- initial_cluster (validated only when used) -------------------------------------------


class DiskConfig(_Section):
    path: NonEmptyStr


class NodeConfig(_Section):
    node_id: NonEmptyStr
    bind_addr: NonEmptyStr
    disks: list[DiskConfig]
    advertise_addr: str | None = None

    @property
    def effective_advertise_addr(self) -> str:
        return self.advertise_addr or self.bind_addr


class ReplicationConfig(_Section):
    min_write_replicas: PositiveInt
    total_slots: Annotated[int, msgspec.Meta(ge=1, le=MAX_TOTAL_SLOTS)] = DEFAULT_TOTAL_SLOTS
    replicas: PositiveInt | None = None
    part_size: Annotated[int, msgspec.Meta(ge=MIN_PART_SIZE, le=MAX_PART_SIZE)] = DEFAULT_PART_SIZE

    def effective_replicas(self, node_count: int) -> int:
        """R = min(replicas, N); replicas defaults to min(3, N)."""
        wanted = self.replicas if self.replicas is not None else DEFAULT_REPLICAS
        return min(wanted, node_count)


class InitialCluster(_Section):
    nodes: list[NodeConfig]
    replication: ReplicationConfig

    def node(self, node_id: str) -> NodeConfig | None:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        return None


# --- archive ---------------------------------------------------------------------------------


class S3Credentials(_Section):
    access_key_id: NonEmptyStr
    secret_access_key: NonEmptyStr

    def __repr__(self) -> str:
        return f"S3Credentials(access_key_id={self.access_key_id!r}, secret_access_key='***')"


class ArchiveS3Config(_Section):
    bucket: NonEmptyStr
    region: NonEmptyStr = "us-east-1"
    endpoint: str | None = None
    allow_http: bool = False
    prefix: str = ""
    credentials: S3Credentials | None = None


class ArchiveRedisConfig(_Section):
    url: NonEmptyStr
    key_prefix: NonEmptyStr = "amberio:archive"


class ArchiveConfig(_Section):
    archive_type: ArchiveType
    layout: ArchiveLayout | None = None
    s3: ArchiveS3Config | None = None
    redis: ArchiveRedisConfig | None = None

    @property
    def effective_layout(self) -> ArchiveLayout:
        """`layout`, defaulting to mirror for S3 and versioned for Redis (§10.1)."""
        if self.layout is not None:
            return self.layout
        return "mirror" if self.archive_type == "s3" else "versioned"


# --- S3 gateway, cache, anti-entropy, init scan ---------------------------------------------


class S3GatewayConfig(_Section):
    credentials: list[S3Credentials] = msgspec.field(default_factory=list)


class CacheConfig(_Section):
    max_bytes: NonNegativeInt | None = None


class AntiEntropyConfig(_Section):
    interval_seconds: PositiveFloat = 300.0
    gc_grace_seconds: NonNegativeFloat = 86400.0
    # Beyond §2 (optional): the pass's budget, tombstone retention, delay of the first pass.
    max_ops_per_second: PositiveFloat | None = None
    max_bytes_per_second: PositiveFloat | None = None
    tombstone_retention_seconds: NonNegativeFloat | None = None
    start_delay_seconds: NonNegativeFloat | None = None


class PeersConfig(_Section):
    """Node-to-node calls (internal API, §8). Beyond §2: an optional section; the defaults
    are the values Amberio always used."""

    connect_timeout_seconds: PositiveFloat = 2.0
    request_timeout_seconds: PositiveFloat = 5.0
    """A head, write-id, listing or heal call; a hung peer costs at most this."""
    retries: NonNegativeInt = 1
    """Further tries of an idempotent read that failed (not after a timeout)."""
    slow_peer_grace_seconds: NonNegativeFloat = 0.5
    """A quorum step goes on this long after enough replicas answered, then without the rest."""
    part_timeout_seconds: PositiveFloat = 120.0
    """Copying one part to or from a peer, whole (waiting for its acknowledgement: at most
    60 s, or this when shorter)."""


class InitScanRedisConfig(_Section):
    url: NonEmptyStr
    list_key: NonEmptyStr = "amberio:init-scan:list"
    page_size: PositiveInt = 500


class InitScanS3Config(_Section):
    bucket: NonEmptyStr
    prefix: str = ""


class InitScanConfig(_Section):
    enabled: bool = True
    redis: InitScanRedisConfig | None = None
    s3: InitScanS3Config | None = None


# --- the whole file ------------------------------------------------------------------------


class Config(_Section, dict=True):
    """The whole YAML file of §2. `initial_cluster` stays raw; see `parse_initial_cluster()`."""

    registry: RegistryConfig
    current_node: str | None = None
    initial_cluster: Any = None
    archive: ArchiveConfig | None = None
    s3: S3GatewayConfig | None = None
    cluster_secret: str | None = None
    read_consistency: ReadConsistency = "quorum"
    cache: CacheConfig | None = None
    anti_entropy: AntiEntropyConfig = msgspec.field(default_factory=AntiEntropyConfig)
    init_scan: InitScanConfig | None = None
    peers: PeersConfig = msgspec.field(default_factory=PeersConfig)

    def __repr__(self) -> str:
        secret = None if self.cluster_secret is None else "***"
        return (
            f"Config(source={self.source!r}, current_node={self.current_node!r}, "
            f"registry={self.registry!r}, cluster_secret={secret!r})"
        )

    @property
    def source(self) -> str:
        """The file this config came from (for messages), or `<embedded default>`."""
        value = self.__dict__.get("_source")
        return value if isinstance(value, str) else "<config>"

    def replace(self, **changes: Any) -> Config:
        """A copy with some fields changed (keeps `source`)."""
        new = msgspec.structs.replace(self, **changes)
        new.__dict__["_source"] = self.source
        return new

    def parse_initial_cluster(self) -> InitialCluster:
        """Validate `initial_cluster` strictly; ConfigError with the key path otherwise."""
        if self.initial_cluster is None:
            raise error(
                self.source,
                "initial_cluster",
                "missing; it is required to initialize a new cluster (no bootstrap state "
                f"exists yet in namespace {self.registry.namespace!r})",
            )
        try:
            parsed = msgspec.convert(self.initial_cluster, InitialCluster)
        except msgspec.ValidationError as exc:
            raise validation_error(
                self.source, exc, self.initial_cluster, "initial_cluster"
            ) from None
        _validate_initial_cluster(self.source, parsed)
        return parsed

    def raw_node_disks(self, node_id: str) -> list[str] | None:
        """Disk paths of `node_id` as written in `initial_cluster`, read leniently.

        None when they cannot be found; entries that are not `{path: str}` are skipped.
        Used to find things on the node's disks without validating the whole section.
        """
        raw = self.initial_cluster
        nodes = raw.get("nodes") if isinstance(raw, Mapping) else None
        if not isinstance(nodes, list):
            return None
        for entry in nodes:
            if isinstance(entry, Mapping) and entry.get("node_id") == node_id:
                disks = entry.get("disks")
                if not isinstance(disks, list):
                    return None
                return [
                    d["path"]
                    for d in disks
                    if isinstance(d, Mapping) and isinstance(d.get("path"), str) and d["path"]
                ]
        return None

    def local_registry_disk(self, node_id: str) -> str:
        """First disk path of `node_id` in `initial_cluster`, read leniently.

        The local registry lives on that disk, so a later start needs just this one value
        of `initial_cluster` to be right (the rest may have been changed since).
        """
        where = "initial_cluster.nodes"
        raw = self.initial_cluster
        nodes = raw.get("nodes") if isinstance(raw, Mapping) else None
        if not isinstance(nodes, list):
            raise error(
                self.source,
                where,
                "required with registry.backend local: the local registry file lives on "
                "the first disk of the current node",
            )
        for index, entry in enumerate(nodes):
            if isinstance(entry, Mapping) and entry.get("node_id") == node_id:
                disks = entry.get("disks")
                first = disks[0] if isinstance(disks, list) and disks else None
                path = first.get("path") if isinstance(first, Mapping) else None
                if not isinstance(path, str) or not path:
                    raise error(
                        self.source,
                        f"{where}[{index}].disks[0].path",
                        "required with registry.backend local (the registry file lives there)",
                    )
                return path
        known = [e.get("node_id") for e in nodes if isinstance(e, Mapping)]
        raise error(
            self.source, where, f"unknown node id {node_id!r}; initial_cluster has {known!r}"
        )


# --- host:port ------------------------------------------------------------------------------


def parse_host_port(value: str) -> tuple[str, int]:
    """Split `host:port` (`[v6]:port` for IPv6). Raises ValueError with a short reason."""
    if not isinstance(value, str) or not value:
        raise ValueError("expected HOST:PORT")
    if value.startswith("["):
        end = value.find("]")
        if end < 0 or value[end + 1 : end + 2] != ":":
            raise ValueError(f"expected [IPv6]:PORT, got {value!r}")
        host, port_text = value[1:end], value[end + 2 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"invalid IPv6 address in {value!r}") from None
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep or not host:
            raise ValueError(f"expected HOST:PORT, got {value!r}")
        if ":" in host:
            raise ValueError(f"IPv6 addresses need brackets ([::1]:PORT), got {value!r}")
        if not _HOSTNAME_RE.match(host):
            raise ValueError(f"invalid host in {value!r}")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"invalid port in {value!r} (expected 1-65535)")
    return host, int(port_text)


def is_wildcard_host(host: str) -> bool:
    return host in ("0.0.0.0", "::", "")


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- loading ------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys in a mapping (PyYAML keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(
                key_node, yaml.ScalarNode
            ):
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"duplicate key {key!r}",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a config file. Any problem raises ConfigError (one line)."""
    source = os.fspath(path)
    try:
        text = Path(source).read_bytes()
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise ConfigError(f"{source}: cannot read config file: {reason}") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML: {yaml_reason(exc)}") from None
    return config_from_data(data, source=source)


def config_from_data(data: object, *, source: str = "<config>") -> Config:
    """Validate already-parsed YAML/JSON data as a config file."""
    if data is None:
        raise ConfigError(f"{source}: the config file is empty")
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{source}: expected a mapping of keys at the top level, got {type_name(data)}"
        )
    try:
        config = msgspec.convert(data, Config)
    except msgspec.ValidationError as exc:
        raise validation_error(source, exc, data, "") from None
    config.__dict__["_source"] = source
    _validate_config(config)
    return config


def embedded_config(data_dir: str | os.PathLike[str], bind: str | None = None) -> Config:
    """The no-config default of §1: one node `node-1` on one disk, local registry, W=1."""
    data_dir_text = os.fspath(data_dir)
    if not data_dir_text:
        raise ConfigError("--data-dir: must not be empty")
    bind_addr = bind or DEFAULT_BIND
    try:
        host, port = parse_host_port(bind_addr)
    except ValueError as exc:
        raise ConfigError(f"--bind: {exc}") from None
    # A single node has no peers; advertise something reachable locally if bound to any.
    advertise = f"127.0.0.1:{port}" if is_wildcard_host(host) else bind_addr
    config = Config(
        current_node=DEFAULT_NODE_ID,
        registry=RegistryConfig(backend="local", namespace=DEFAULT_NAMESPACE),
        initial_cluster={
            "nodes": [
                {
                    "node_id": DEFAULT_NODE_ID,
                    "bind_addr": bind_addr,
                    "advertise_addr": advertise,
                    "disks": [{"path": data_dir_text}],
                }
            ],
            "replication": {"min_write_replicas": 1, "total_slots": DEFAULT_TOTAL_SLOTS},
        },
    )
    config.__dict__["_source"] = EMBEDDED_SOURCE
    return config


# --- validation beyond types ----------------------------------------------------------------


def _validate_config(config: Config) -> None:
    src = config.source
    reg = config.registry
    if not _NAMESPACE_RE.match(reg.namespace):
        raise error(
            src,
            "registry.namespace",
            f"invalid namespace {reg.namespace!r} (letters, digits, '.', '_', '-'; "
            "at most 128 characters)",
        )
    if reg.backend == "redis":
        if reg.redis is None:
            raise error(src, "registry.redis", "required when registry.backend is redis")
        _check_redis_url(src, "registry.redis.url", reg.redis.url)
    if config.current_node is not None and not _NODE_ID_RE.match(config.current_node):
        raise error(src, "current_node", f"invalid node id {config.current_node!r}")
    if config.cluster_secret is not None and not config.cluster_secret:
        raise error(src, "cluster_secret", "must not be empty (omit the key for no secret)")

    archive = config.archive
    if archive is not None:
        if archive.archive_type == "s3":
            if archive.s3 is None:
                raise error(src, "archive.s3", "required when archive.archive_type is s3")
            endpoint = archive.s3.endpoint
            if endpoint is not None:
                scheme = urlsplit(endpoint).scheme
                if scheme not in ("http", "https") or not urlsplit(endpoint).netloc:
                    raise error(
                        src, "archive.s3.endpoint", f"expected an http(s) URL, got {endpoint!r}"
                    )
                if scheme == "http" and not archive.s3.allow_http:
                    raise error(
                        src,
                        "archive.s3.allow_http",
                        "must be true to use the plain-http endpoint archive.s3.endpoint",
                    )
        else:
            if archive.redis is None:
                raise error(src, "archive.redis", "required when archive.archive_type is redis")
            _check_redis_url(src, "archive.redis.url", archive.redis.url)

    if config.s3 is not None:
        seen: set[str] = set()
        for i, cred in enumerate(config.s3.credentials):
            if cred.access_key_id in seen:
                raise error(
                    src,
                    f"s3.credentials[{i}].access_key_id",
                    f"duplicate access key id {cred.access_key_id!r}",
                )
            seen.add(cred.access_key_id)

    scan = config.init_scan
    if scan is not None:
        if scan.redis is not None:
            _check_redis_url(src, "init_scan.redis.url", scan.redis.url)
        if scan.enabled and scan.redis is None and scan.s3 is None:
            raise error(
                src, "init_scan", "enabled, but neither init_scan.redis nor init_scan.s3 is set"
            )


def _validate_initial_cluster(src: str, cluster: InitialCluster) -> None:
    nodes = cluster.nodes
    if not nodes:
        raise error(src, "initial_cluster.nodes", "must list at least one node")
    ids: dict[str, int] = {}
    advertised: dict[str, int] = {}
    for i, node in enumerate(nodes):
        where = f"initial_cluster.nodes[{i}]"
        if not _NODE_ID_RE.match(node.node_id):
            raise error(
                src,
                f"{where}.node_id",
                f"invalid node id {node.node_id!r} (letters, digits, '.', '_', '-'; "
                "at most 64 characters)",
            )
        if node.node_id in ids:
            raise error(
                src,
                f"{where}.node_id",
                f"duplicate node id {node.node_id!r} (also initial_cluster.nodes"
                f"[{ids[node.node_id]}])",
            )
        ids[node.node_id] = i
        try:
            bind_host, _ = parse_host_port(node.bind_addr)
        except ValueError as exc:
            raise error(src, f"{where}.bind_addr", str(exc)) from None
        if node.advertise_addr is None:
            if is_wildcard_host(bind_host):
                raise error(
                    src,
                    f"{where}.advertise_addr",
                    f"required when bind_addr is a wildcard address ({node.bind_addr!r})",
                )
        else:
            try:
                adv_host, _ = parse_host_port(node.advertise_addr)
            except ValueError as exc:
                raise error(src, f"{where}.advertise_addr", str(exc)) from None
            if is_wildcard_host(adv_host):
                raise error(
                    src,
                    f"{where}.advertise_addr",
                    f"must be an address peers can reach, not {node.advertise_addr!r}",
                )
        advertise = node.effective_advertise_addr
        if advertise in advertised:
            raise error(
                src,
                f"{where}.advertise_addr",
                f"duplicate address {advertise!r} (also initial_cluster.nodes"
                f"[{advertised[advertise]}])",
            )
        advertised[advertise] = i
        if not node.disks:
            raise error(src, f"{where}.disks", "must list at least one disk")
        seen_disks: dict[str, int] = {}
        for j, disk in enumerate(node.disks):
            normalized = os.path.normpath(os.path.expanduser(disk.path))
            if normalized in seen_disks:
                raise error(
                    src,
                    f"{where}.disks[{j}].path",
                    f"duplicate disk {disk.path!r} (also disks[{seen_disks[normalized]}])",
                )
            seen_disks[normalized] = j

    rep = cluster.replication
    replicas = rep.effective_replicas(len(nodes))
    if rep.min_write_replicas > replicas:
        raise error(
            src,
            "initial_cluster.replication.min_write_replicas",
            f"{rep.min_write_replicas} exceeds the replica count {replicas} "
            f"({len(nodes)} node(s), replicas {rep.replicas or DEFAULT_REPLICAS}): "
            "no write could ever succeed",
        )


def _check_redis_url(src: str, where: str, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise error(src, where, "expected a redis://, rediss:// or unix:// URL")
    if parts.scheme != "unix" and not parts.hostname:
        raise error(src, where, "the URL has no host")
    try:
        _ = parts.port
    except ValueError:
        raise error(src, where, "the URL has an invalid port") from None
