"""Registry backends (contract §3): where the bootstrap state and heartbeats live.

- `RedisRegistry`: multi-node clusters. Keys are scoped by namespace:
  `amberio:{namespace}:bootstrap` (the state, JSON, written once with SET NX) and
  `amberio:{namespace}:node:{node_id}` (a heartbeat with a TTL).
- `LocalRegistry`: a single node; the state is a JSON file `<first disk>/amberio/registry.json`,
  published atomically and first-wins (temp file, fsync, hard link, fsync dir).

An unreachable registry raises `RegistryUnavailable` naming the URL (never its password).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import msgspec
import redis.asyncio as aioredis
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError, ResponseError
from redis.retry import Retry

from amberio.cluster.state import BootstrapState, decode_state, encode_state, utc_now
from amberio.config import Config
from amberio.errors import ConfigError, RegistryUnavailable

REGISTRY_FILE: Final = "registry.json"
CONNECT_TIMEOUT: Final = 2.0
SOCKET_TIMEOUT: Final = 5.0


class Registry(abc.ABC):
    """What every backend offers. All methods may raise RegistryUnavailable."""

    @property
    @abc.abstractmethod
    def description(self) -> str:
        """Where the registry is, for messages (no secrets)."""

    @abc.abstractmethod
    async def load_bootstrap(self) -> BootstrapState | None:
        """The namespace's bootstrap state, or None when no init has published one."""

    @abc.abstractmethod
    async def publish_bootstrap(self, state: BootstrapState) -> BootstrapState:
        """Publish `state` unless one exists (first wins); return the winner, re-read."""

    @abc.abstractmethod
    async def heartbeat(self, node_id: str, ttl_seconds: float) -> None:
        """Mark `node_id` alive for `ttl_seconds`."""

    @abc.abstractmethod
    async def unregister(self, node_id: str) -> None:
        """Drop `node_id`'s heartbeat now (clean shutdown)."""

    @abc.abstractmethod
    async def live_nodes(self) -> set[str]:
        """Ids of the nodes whose heartbeat has not expired."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections. Idempotent."""


# --- Redis ----------------------------------------------------------------------------------


def redact_url(url: str) -> str:
    """The URL without its password (`redis://user:***@host:6379/0`)."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{parts.username or ''}:***@{host}"
        if parts.port is not None:
            netloc += f":{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    except ValueError:
        return "<unparseable redis URL>"


class _Heartbeat(msgspec.Struct, frozen=True):
    node_id: str
    at: str
    pid: int


class RedisRegistry(Registry):
    """Registry in Redis (redis.asyncio with hiredis). Build it with `await connect(...)`."""

    def __init__(self, client: aioredis.Redis, url: str, namespace: str) -> None:
        self._client = client
        self._url = redact_url(url)
        self.namespace = namespace
        self._prefix = f"amberio:{namespace}"
        self._known_nodes: tuple[str, ...] = ()
        self._closed = False

    @classmethod
    async def connect(
        cls,
        url: str,
        namespace: str,
        *,
        pool_size: int = 10,
        connect_timeout: float = CONNECT_TIMEOUT,
        socket_timeout: float = SOCKET_TIMEOUT,
    ) -> RedisRegistry:
        """Open a pool and check the server answers (RegistryUnavailable otherwise)."""
        try:
            client = aioredis.Redis.from_url(
                url,
                max_connections=pool_size,
                socket_connect_timeout=connect_timeout,
                socket_timeout=socket_timeout,
                retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
                health_check_interval=30,
            )
        except (ValueError, RedisError) as exc:
            raise ConfigError(f"invalid registry URL {redact_url(url)}: {exc}") from None
        registry = cls(client, url, namespace)
        try:
            # Bounded: --init must give up within a few seconds when Redis is unreachable.
            await asyncio.wait_for(client.ping(), timeout=connect_timeout + 1.0)
        except BaseException as exc:
            await registry.close()
            if isinstance(exc, TimeoutError):
                raise RegistryUnavailable(
                    f"registry unreachable at {registry._url}: timed out after "
                    f"{connect_timeout + 1.0:g} s"
                ) from None
            if isinstance(exc, RedisError | OSError):
                raise registry._unavailable(exc) from None
            raise
        return registry

    @property
    def description(self) -> str:
        return f"redis registry {self._url} (namespace {self.namespace!r})"

    @property
    def bootstrap_key(self) -> str:
        return f"{self._prefix}:bootstrap"

    def node_key(self, node_id: str) -> str:
        return f"{self._prefix}:node:{node_id}"

    def _unavailable(self, exc: BaseException) -> RegistryUnavailable:
        reason = " ".join(str(exc).split()) or exc.__class__.__name__
        return RegistryUnavailable(f"registry unreachable at {self._url}: {reason}")

    async def _call(self, what: str, coro: Any) -> Any:
        try:
            return await coro
        except ResponseError as exc:
            raise RegistryUnavailable(f"registry {self._url} refused {what}: {exc}") from None
        except (RedisError, OSError, TimeoutError) as exc:
            raise self._unavailable(exc) from None

    def _remember(self, state: BootstrapState | None) -> BootstrapState | None:
        if state is not None:
            self._known_nodes = tuple(n.node_id for n in state.nodes)
        return state

    async def load_bootstrap(self) -> BootstrapState | None:
        raw = await self._call("GET", self._client.get(self.bootstrap_key))
        if raw is None:
            return None
        state = decode_state(raw, origin=f"{self._url} key {self.bootstrap_key}")
        return self._remember(state)

    async def publish_bootstrap(self, state: BootstrapState) -> BootstrapState:
        state.validate()
        await self._call(
            "SET NX", self._client.set(self.bootstrap_key, encode_state(state), nx=True)
        )
        winner = await self.load_bootstrap()
        if winner is None:  # deleted between SET and GET: nothing sane to do
            raise RegistryUnavailable(
                f"registry {self._url}: key {self.bootstrap_key} vanished right after publishing"
            )
        return winner

    async def heartbeat(self, node_id: str, ttl_seconds: float) -> None:
        value = msgspec.json.encode(_Heartbeat(node_id, utc_now(), os.getpid()))
        ttl_ms = max(1, int(ttl_seconds * 1000))
        await self._call("SET", self._client.set(self.node_key(node_id), value, px=ttl_ms))

    async def unregister(self, node_id: str) -> None:
        await self._call("DEL", self._client.delete(self.node_key(node_id)))

    async def live_nodes(self) -> set[str]:
        if self._known_nodes:
            keys = [self.node_key(n) for n in self._known_nodes]
            values = await self._call("MGET", self._client.mget(keys))
            return {n for n, v in zip(self._known_nodes, values, strict=True) if v is not None}
        pattern = f"{self._prefix}:node:*"
        prefix_len = len(pattern) - 1

        async def scan() -> set[str]:
            found: set[str] = set()
            async for key in self._client.scan_iter(match=pattern, count=1000):
                text = key.decode() if isinstance(key, bytes) else str(key)
                found.add(text[prefix_len:])
            return found

        result: set[str] = await self._call("SCAN", scan())
        return result

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            await self._client.aclose()


# --- local file ----------------------------------------------------------------------------


class LocalRegistry(Registry):
    """Single-node registry: the state in `<disk>/amberio/registry.json`; `live_nodes` = self."""

    def __init__(self, path: str | os.PathLike[str], namespace: str, node_id: str) -> None:
        self.path = Path(path)
        self.namespace = namespace
        self.node_id = node_id

    @classmethod
    def for_disk(cls, disk: str | os.PathLike[str], namespace: str, node_id: str) -> LocalRegistry:
        disk_path = Path(os.path.abspath(os.path.expanduser(os.fspath(disk))))
        return cls(disk_path / "amberio" / REGISTRY_FILE, namespace, node_id)

    @property
    def description(self) -> str:
        return f"local registry {self.path}"

    async def load_bootstrap(self) -> BootstrapState | None:
        return await asyncio.to_thread(self._load)

    def _load(self) -> BootstrapState | None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigError(f"{self.path}: cannot read registry file: {exc.strerror}") from None
        return decode_state(data, origin=str(self.path))

    async def publish_bootstrap(self, state: BootstrapState) -> BootstrapState:
        state.validate()
        await asyncio.to_thread(self._publish, encode_state(state))
        winner = await self.load_bootstrap()
        if winner is None:
            raise ConfigError(f"{self.path}: registry file vanished right after publishing")
        return winner

    def _publish(self, data: bytes) -> None:
        try:
            create_exclusive(self.path, data)
        except FileExistsError:
            return  # someone else won
        except OSError as exc:
            raise ConfigError(
                f"{self.path}: cannot write registry file: {exc.strerror or exc}"
            ) from None

    async def heartbeat(self, node_id: str, ttl_seconds: float) -> None:
        return None

    async def unregister(self, node_id: str) -> None:
        return None

    async def live_nodes(self) -> set[str]:
        return {self.node_id}

    async def close(self) -> None:
        return None


# --- helpers ------------------------------------------------------------------------------


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temp(directory: Path, name: str, data: bytes) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return Path(tmp)


def atomic_write(path: Path, data: bytes) -> None:
    """Write `path` atomically and durably (temp file, fsync, rename, fsync dir)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _write_temp(path.parent, path.name, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def create_exclusive(path: Path, data: bytes) -> None:
    """Create `path` with `data` atomically, only if it does not exist (FileExistsError).

    Readers never see a partial file: the complete, fsynced temp file is hard-linked into
    place, which fails when the name exists.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _write_temp(path.parent, path.name, data)
    try:
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise
        except OSError:
            # No hard links on this filesystem: best effort, check then rename.
            if path.exists():
                raise FileExistsError(str(path)) from None
            os.rename(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    _fsync_dir(path.parent)


async def open_registry(config: Config, node_id: str) -> Registry:
    """The registry `config` names, connected. For `local`, the file on the node's first disk."""
    reg = config.registry
    if reg.backend == "redis":
        if reg.redis is None:  # load_config already refuses this
            raise ConfigError(f"{config.source}: registry.redis: required for backend redis")
        return await RedisRegistry.connect(
            reg.redis.url, reg.namespace, pool_size=reg.redis.pool_size
        )
    disk = config.local_registry_disk(node_id)
    return LocalRegistry.for_disk(disk, reg.namespace, node_id)
