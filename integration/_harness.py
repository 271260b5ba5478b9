"""Shared machinery for the integration cases (contract §13).

A case is a numbered script `integration/NNN_name.py` that calls `run_case(main, defaults=...)`.
The harness parses the common flags, checks that Redis answers (it never starts one), finds or
builds the `amberio` executable, gives the case a temp folder and a port allocator, starts and
stops real nodes (`amberio server --config <file> --current-node <id>`), and turns the outcome into
an exit status: 0 pass, 1 fail (with a clear message and the tail of every node's log), 77 skip.

Only the standard library, plus redis-py for the reachability check and key clean-up
(`RedisArchiveKeys` for the Redis archive cases), and boto3 for the S3 cases (`S3Gateway` for
the S3 API of a case's cluster; `S3Target`, from `AMBERIO_S3_*`, for the S3 archive cases).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import inspect
import json
import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.parse
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parent.parent
INTEGRATION_DIR = REPO_ROOT / "integration"
DEFAULT_BINARY = REPO_ROOT / ".venv" / "bin" / "amberio"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379"

EXIT_PASS = 0
EXIT_FAIL = 1
EXIT_SKIP = 77  # automake's "skipped"; run_all.py counts it as skipped

HEALTH_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
LOG_TAIL_LINES = 40

# §5: the columns `file_entries` must have, with their declared types.
FILE_ENTRIES_COLUMNS: dict[str, str] = {
    "slot_id": "INTEGER",
    "blob_path": "TEXT",
    "file_name": "TEXT",
    "file_kind": "TEXT",
    "storage_kind": "TEXT",
    "inline_data": "BLOB",
    "external_path": "TEXT",
    "archive_url": "TEXT",
    "size_bytes": "INTEGER",
    "sha256": "TEXT",
    "generation": "INTEGER",
    "part_no": "INTEGER",
    "etag": "TEXT",
    "created_at": "TEXT",
    "updated_at": "TEXT",
}
INDEX_COLUMNS = ("slot_id", "blob_path", "generation", "part_no")
META_FIELDS = (
    "path",
    "slot_id",
    "generation",
    "version",
    "size_bytes",
    "etag",
    "part_size",
    "part_count",
    "part_index_state",
    "updated_at",
)
PART_FILE_RE = re.compile(r"^part\.(\d{8})\.([0-9a-f]{64})$")
GEN_DIR_RE = re.compile(r"^g\.(\d+)$")
SQLITE_FILE_RE = re.compile(r"^meta\.sqlite3(-wal|-shm|-journal)?$")


# --------------------------------------------------------------------------- outcomes


class CaseFailure(AssertionError):
    """A contract check failed. The message says what was expected and what came back."""


class CaseSkipped(Exception):
    """The case cannot run here (missing optional service); exit status 77."""


class SetupError(Exception):
    """The environment is not usable (Redis down, no binary, ...): reported as a failure."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise CaseFailure(message)


def fail(message: str) -> None:
    raise CaseFailure(message)


def skip(reason: str) -> None:
    raise CaseSkipped(reason)


def expect_eq(actual: object, expected: object, what: str) -> None:
    if actual != expected:
        raise CaseFailure(f"{what}: expected {expected!r}, got {actual!r}")


def eventually(probe: Callable[[], T], timeout: float, interval: float = 0.1) -> T:
    """Retry `probe` until it stops raising CaseFailure; re-raise the last failure at timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return probe()
        except CaseFailure:
            if time.monotonic() >= deadline:
                raise
        time.sleep(interval)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def slot_for(path: str, total_slots: int) -> int:
    """§4: int.from_bytes(sha256(path_utf8)[0:8], "big") % total_slots."""
    digest = hashlib.sha256(path.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % total_slots


def pattern_bytes(size: int, seed: int) -> bytes:
    """Deterministic, non-repeating-looking bytes (so a misplaced range shows)."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def parse_rfc3339(value: object, what: str) -> datetime:
    check(isinstance(value, str), f"{what}: expected an RFC 3339 string, got {value!r}")
    assert isinstance(value, str)
    check(
        re.match(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$", value)
        is not None,
        f"{what}: {value!r} is not RFC 3339 (date, time and offset)",
    )
    return datetime.fromisoformat(value.replace("z", "Z").replace("Z", "+00:00"))


# --------------------------------------------------------------------------- options


@dataclass
class Options:
    binary: Path
    binary_explicit: bool
    redis_url: str
    nodes: int
    base_port: int | None
    min_write_replicas: int
    total_slots: int
    api_prefix: str
    internal_prefix: str
    keep_artifacts: bool
    build_if_missing: bool
    extra: argparse.Namespace
    unknown: list[str] = field(default_factory=list)


def add_common_arguments(parser: argparse.ArgumentParser, defaults: Mapping[str, object]) -> None:
    """The flags of §13, with `defaults` overriding the suite-wide defaults."""

    def dflt(name: str, value: object) -> Any:
        return defaults.get(name, value)

    parser.add_argument(
        "--binary",
        default=None,
        help=f"the amberio executable (default: {DEFAULT_BINARY})",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("AMBERIO_REDIS_URL") or dflt("redis_url", DEFAULT_REDIS_URL),
        help="registry Redis (env AMBERIO_REDIS_URL; default %(default)s)",
    )
    parser.add_argument("--nodes", type=int, default=dflt("nodes", 3))
    parser.add_argument(
        "--base-port",
        type=int,
        default=dflt("base_port", None),
        help="first port to use (default: free ports picked by the kernel)",
    )
    parser.add_argument("--min-write-replicas", type=int, default=dflt("min_write_replicas", 2))
    parser.add_argument("--total-slots", type=int, default=dflt("total_slots", 2048))
    parser.add_argument("--api-prefix", default=dflt("api_prefix", "/_/api/v1"))
    parser.add_argument("--internal-prefix", default=dflt("internal_prefix", "/internal/v1"))
    parser.add_argument(
        "--keep-artifacts",
        action="store_true",
        default=bool(dflt("keep_artifacts", False)),
        help="keep the temp folder (configs, data dirs, logs)",
    )
    parser.add_argument(
        "--build-if-missing",
        action="store_true",
        default=bool(dflt("build_if_missing", False)),
        help="run `uv sync` at the repo root when the default binary is missing",
    )


def parse_options(
    argv: Sequence[str] | None,
    *,
    description: str,
    defaults: Mapping[str, object],
    add_arguments: Callable[[argparse.ArgumentParser], None] | None,
) -> Options:
    parser = argparse.ArgumentParser(description=description)
    add_common_arguments(parser, defaults)
    if add_arguments is not None:
        add_arguments(parser)
    ns, unknown = parser.parse_known_args(argv)
    if ns.nodes < 1:
        parser.error("--nodes must be at least 1")
    if ns.min_write_replicas < 1:
        parser.error("--min-write-replicas must be at least 1")
    if ns.total_slots < 1:
        parser.error("--total-slots must be at least 1")
    binary_explicit = ns.binary is not None
    binary = Path(ns.binary) if binary_explicit else DEFAULT_BINARY
    return Options(
        binary=binary.resolve() if binary_explicit else binary,
        binary_explicit=binary_explicit,
        redis_url=ns.redis_url,
        nodes=ns.nodes,
        base_port=ns.base_port,
        min_write_replicas=ns.min_write_replicas,
        total_slots=ns.total_slots,
        api_prefix="/" + ns.api_prefix.strip("/"),
        internal_prefix="/" + ns.internal_prefix.strip("/"),
        keep_artifacts=ns.keep_artifacts,
        build_if_missing=ns.build_if_missing,
        extra=ns,
        unknown=list(unknown),
    )


# --------------------------------------------------------------------------- environment


def check_redis(url: str) -> None:
    """Fail fast, with a clear message, when the registry Redis does not answer PING."""
    try:
        import redis
    except ImportError as exc:  # pragma: no cover - only outside the uv project
        raise SetupError(
            "the integration cases need redis-py: run them with "
            "`uv run --project integration integration/<case>.py`"
        ) from exc
    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
    try:
        client.ping()
    except Exception as exc:
        raise SetupError(
            f"Redis is unreachable at {url} ({type(exc).__name__}: {exc}). "
            "The integration scripts never start Redis: start one (e.g. "
            "`redis-server --port 6379 --save '' --appendonly no`) and pass --redis-url "
            "or set AMBERIO_REDIS_URL; `make test` does all of this for you."
        ) from None
    finally:
        with contextlib.suppress(Exception):
            client.close()


def delete_namespace_keys(url: str, namespace: str) -> int:
    """Remove the registry keys of a finished case run (the namespace is random and unique)."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=5)
    removed = 0
    try:
        batch: list[Any] = []
        for key in client.scan_iter(match=f"*{namespace}*", count=500):
            batch.append(key)
            if len(batch) >= 500:
                removed += int(client.delete(*batch))
                batch = []
        if batch:
            removed += int(client.delete(*batch))
    finally:
        with contextlib.suppress(Exception):
            client.close()
    return removed


def _clean_env_for_root_uv() -> dict[str, str]:
    env = dict(os.environ)
    for name in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT", "UV_PROJECT"):
        env.pop(name, None)
    return env


def resolve_binary(opts: Options) -> Path:
    binary = opts.binary
    if binary.is_file() and os.access(binary, os.X_OK):
        return binary
    if opts.binary_explicit:
        raise SetupError(f"--binary {binary}: no such executable")
    if not opts.build_if_missing:
        raise SetupError(
            f"{binary} does not exist: run `uv sync` at the repo root, pass --build-if-missing, "
            "or pass --binary"
        )
    uv = shutil.which("uv")
    if uv is None:
        raise SetupError("--build-if-missing needs `uv` on PATH (pip install uv)")
    print(f"[harness] {binary} missing: running `uv sync` in {REPO_ROOT}", flush=True)
    proc = subprocess.run([uv, "sync"], cwd=REPO_ROOT, env=_clean_env_for_root_uv(), check=False)
    if proc.returncode != 0:
        raise SetupError(f"`uv sync` in {REPO_ROOT} failed with status {proc.returncode}")
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        raise SetupError(f"`uv sync` succeeded but {binary} still does not exist")
    return binary


def port_is_free(port: int) -> bool:
    """True when a server could listen on 127.0.0.1:port (TIME_WAIT leftovers do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def port_is_listening(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        try:
            sock.connect((host, port))
        except OSError:
            return False
    return True


class PortAllocator:
    """Free 127.0.0.1 ports: consecutive from --base-port, else picked by the kernel."""

    def __init__(self, base: int | None) -> None:
        self._next = base
        self._used: set[int] = set()

    def take(self) -> int:
        if self._next is not None:
            port = self._next
            self._next += 1
            if not port_is_free(port):
                raise SetupError(f"port {port} (from --base-port) is already in use")
            self._used.add(port)
            return port
        for _ in range(200):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", 0))
                port = int(sock.getsockname()[1])
            if port not in self._used:
                self._used.add(port)
                return port
        raise SetupError("could not find a free port on 127.0.0.1")


# --------------------------------------------------------------------------- YAML


def _yaml_inline(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid YAML double-quoted scalar
    if isinstance(value, dict) and not value:
        return "{}"
    if isinstance(value, list) and not value:
        return "[]"
    raise TypeError(f"cannot write {type(value).__name__} inline")


def _yaml_lines(value: object, indent: int) -> list[str]:
    pad = "  " * indent
    out: list[str] = []
    if isinstance(value, dict) and value:
        for key, item in value.items():
            if isinstance(item, dict | list) and item:
                out.append(f"{pad}{key}:")
                out.extend(_yaml_lines(item, indent + 1))
            else:
                out.append(f"{pad}{key}: {_yaml_inline(item)}")
    elif isinstance(value, list) and value:
        for item in value:
            if isinstance(item, dict | list) and item:
                sub = _yaml_lines(item, indent + 1)
                out.append(f"{pad}- {sub[0].lstrip()}")
                out.extend(sub[1:])
            else:
                out.append(f"{pad}- {_yaml_inline(item)}")
    else:
        out.append(pad + _yaml_inline(value))
    return out


def to_yaml(value: Mapping[str, object]) -> str:
    return "\n".join(_yaml_lines(dict(value), 0)) + "\n"


# --------------------------------------------------------------------------- HTTP


@dataclass
class Response:
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes
    incomplete: bool = False  # the server closed before sending Content-Length bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            raise CaseFailure(f"expected a JSON body, got {self.describe()}") from None

    def describe(self) -> str:
        body = self.body[:400]
        more = "..." if len(self.body) > 400 else ""
        return f"HTTP {self.status} {self.reason} body={body!r}{more}"


def http_request(
    host: str,
    port: int,
    method: str,
    target: str,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> Response:
    """One request on a fresh connection. `target` is sent as given (already encoded)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, target, body=body, headers=dict(headers or {}))
        resp = conn.getresponse()
        incomplete = False
        try:
            data = resp.read()
        except http.client.IncompleteRead as exc:
            data = bytes(exc.partial)
            incomplete = True
        hdrs: dict[str, str] = {}
        for name, value in resp.getheaders():
            hdrs[name.lower()] = value
        return Response(resp.status, resp.reason, hdrs, data, incomplete)
    finally:
        conn.close()


def hang_up_mid_body(
    host: str,
    port: int,
    target: str,
    content_length: int,
    sent: bytes,
    *,
    reset: bool = False,
    pause: float = 0.2,
) -> None:
    """Send a request promising `content_length` body bytes, send only `sent`, then hang up
    (FIN, or RST with `reset=True`)."""
    with socket.create_connection((host, port), timeout=10) as sock:
        head = (
            f"PUT {target} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {content_length}\r\n\r\n"
        ).encode()
        sock.sendall(head + sent)
        time.sleep(pause)  # let the server start consuming the body
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def quote_path(path: str) -> str:
    return urllib.parse.quote(path, safe="/")


class Api:
    """The native API (§7) and a few internal calls (§8) of one node."""

    def __init__(self, host: str, port: int, api_prefix: str, internal_prefix: str) -> None:
        self.host = host
        self.port = port
        self.api_prefix = api_prefix
        self.internal_prefix = internal_prefix

    def request(
        self,
        method: str,
        target: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 60.0,
    ) -> Response:
        return http_request(self.host, self.port, method, target, body, headers, timeout)

    def blob_target(self, path: str, raw: bool = False) -> str:
        return f"{self.api_prefix}/blobs/{path if raw else quote_path(path)}"

    def health(self) -> Response:
        return self.request("GET", "/health", timeout=5.0)

    def put(
        self,
        path: str,
        data: bytes,
        headers: Mapping[str, str] | None = None,
        raw: bool = False,
    ) -> Response:
        return self.request("PUT", self.blob_target(path, raw), data, headers)

    def get(
        self,
        path: str,
        range_header: str | None = None,
        headers: Mapping[str, str] | None = None,
        raw: bool = False,
    ) -> Response:
        hdrs = dict(headers or {})
        if range_header is not None:
            hdrs["Range"] = range_header
        return self.request("GET", self.blob_target(path, raw), None, hdrs)

    def head(self, path: str, headers: Mapping[str, str] | None = None) -> Response:
        return self.request("HEAD", self.blob_target(path), None, headers)

    def delete(self, path: str, headers: Mapping[str, str] | None = None) -> Response:
        return self.request("DELETE", self.blob_target(path), None, headers)

    def list_blobs(
        self,
        prefix: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        include_deleted: bool | None = None,
    ) -> Response:
        query: dict[str, str] = {}
        if prefix is not None:
            query["prefix"] = prefix
        if limit is not None:
            query["limit"] = str(limit)
        if cursor is not None:
            query["cursor"] = cursor
        if include_deleted is not None:
            query["include_deleted"] = "true" if include_deleted else "false"
        qs = urllib.parse.urlencode(query)
        return self.request("GET", f"{self.api_prefix}/blobs" + (f"?{qs}" if qs else ""))

    def list_all(self, prefix: str, include_deleted: bool = False) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(10_000):
            resp = expect_status(
                self.list_blobs(
                    prefix=prefix, limit=1000, cursor=cursor, include_deleted=include_deleted
                ),
                200,
                f"LIST prefix={prefix!r}",
            )
            doc = resp.json()
            items.extend(doc["items"])
            cursor = doc.get("next_cursor")
            if not cursor:
                return items
        raise CaseFailure(f"LIST prefix={prefix!r} never ended (10000 pages)")

    def resolve(self, path: str) -> dict[str, Any]:
        qs = urllib.parse.urlencode({"path": path})
        resp = expect_status(
            self.request("GET", f"{self.api_prefix}/slots/resolve?{qs}"),
            200,
            f"GET slots/resolve?path={path!r}",
        )
        doc = resp.json()
        check(isinstance(doc, dict), f"slots/resolve answered {resp.describe()}")
        assert isinstance(doc, dict)
        return doc

    def slot_of(self, path: str) -> int:
        slot = self.resolve(path).get("slot_id")
        check(isinstance(slot, int), f"slots/resolve?path={path!r}: slot_id is {slot!r}")
        assert isinstance(slot, int)
        return slot

    def internal_head(self, slot: int, path: str) -> Response:
        qs = urllib.parse.urlencode({"path": path})
        return self.request("GET", f"{self.internal_prefix}/slots/{slot}/heads?{qs}")


def expect_status(resp: Response, expected: int | Collection[int], what: str) -> Response:
    wanted = (expected,) if isinstance(expected, int) else tuple(expected)
    if resp.status not in wanted:
        shown = wanted[0] if len(wanted) == 1 else " or ".join(str(s) for s in wanted)
        raise CaseFailure(f"{what}: expected HTTP {shown}, got {resp.describe()}")
    return resp


def expect_error_body(resp: Response, what: str) -> dict[str, Any]:
    """§7: errors are `{"error": "<message>", "code": "<Code>"}`."""
    try:
        doc = json.loads(resp.body)
    except ValueError:
        raise CaseFailure(
            f'{what}: error body is not JSON {{"error","code"}}: {resp.describe()}'
        ) from None
    check(
        isinstance(doc, dict)
        and isinstance(doc.get("error"), str)
        and bool(doc.get("error"))
        and isinstance(doc.get("code"), str)
        and bool(doc.get("code")),
        f'{what}: error body must be {{"error": <message>, "code": <Code>}}, got {resp.describe()}',
    )
    assert isinstance(doc, dict)
    return doc


def strip_etag(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"')


# --------------------------------------------------------------------------- nodes


@dataclass
class RunResult:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    leftover: list[str] = field(default_factory=list)  # processes of its group still alive


def run_command(
    cmd: Sequence[str], *, cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 60.0
) -> RunResult:
    """Run to completion in its own process group (killed whole on timeout)."""
    started = time.monotonic()
    proc = subprocess.Popen(
        list(cmd),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env) if env is not None else None,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise CaseFailure(
            f"`{' '.join(cmd)}` did not exit within {timeout:.0f}s; output: "
            f"{out[-800:]!r} {err[-800:]!r}"
        ) from None
    finally:
        leftover = [cmdline for _pid, cmdline in group_members(proc.pid)]
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # nothing of it may outlive it
    return RunResult(
        proc.returncode,
        out.decode("utf-8", "replace"),
        err.decode("utf-8", "replace"),
        time.monotonic() - started,
        leftover,
    )


def group_members(pgid: int) -> list[tuple[int, str]]:
    """Live processes of process group `pgid` (Linux /proc)."""
    found: list[tuple[int, str]] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 2 and fields[0] != "Z" and int(fields[2]) == pgid:
            found.append((int(entry.name), raw.replace(b"\0", b" ").decode("utf-8", "replace")))
    return found


def processes_mentioning(text: str) -> list[tuple[int, str]]:
    """Live processes whose command line contains `text` (Linux /proc)."""
    found: list[tuple[int, str]] = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        cmdline = raw.replace(b"\0", b" ").decode("utf-8", "replace").strip()
        if text in cmdline:
            found.append((int(entry.name), cmdline))
    return found


class Node:
    def __init__(self, cluster: Cluster, index: int, port: int) -> None:
        self.cluster = cluster
        self.index = index
        self.node_id = f"node-{index + 1}"
        self.port = port
        self.addr = f"127.0.0.1:{port}"
        self.dir = cluster.dir / self.node_id
        self.disk = self.dir / "disk"
        self.config_path = cluster.dir / f"{self.node_id}.yaml"
        self.log_path = cluster.dir / "logs" / f"{self.node_id}.log"
        self.config: dict[str, Any] = {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.api = Api(
            "127.0.0.1", port, cluster.case.opts.api_prefix, cluster.case.opts.internal_prefix
        )

    def __repr__(self) -> str:
        return f"<{self.node_id} {self.addr}>"

    # config ---------------------------------------------------------------

    def write_config(self) -> None:
        self.config_path.write_text(to_yaml(self.config), encoding="utf-8")

    def set_port(self, port: int) -> None:
        """Point this handle at another port (after the bootstrap state moved the node)."""
        self.port = port
        self.addr = f"127.0.0.1:{port}"
        self.api = Api("127.0.0.1", port, self.api.api_prefix, self.api.internal_prefix)

    # process --------------------------------------------------------------

    def command(
        self, *extra: str, config: Path | None = None, node_id: str | None = None
    ) -> list[str]:
        return [
            str(self.cluster.case.binary),
            "server",
            "--config",
            str(config or self.config_path),
            "--current-node",
            node_id or self.node_id,
            *extra,
        ]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        for name in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT"):
            env.pop(name, None)
        return env

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, *extra: str, wait: bool = True, timeout: float = HEALTH_TIMEOUT) -> None:
        if self.running:
            raise SetupError(f"{self.node_id} is already running")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        cmd = self.command(*extra)
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start #{self.starts}: {' '.join(cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                cmd,
                cwd=self.cluster.dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env(),
                start_new_session=True,  # own process group: kill -9 reaches every process
            )
        if wait:
            self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float = HEALTH_TIMEOUT) -> float:
        """Poll GET /health until 200; returns the seconds waited."""
        started = time.monotonic()
        deadline = started + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise CaseFailure(
                    f"{self.node_id} exited with status {self.proc.returncode} before "
                    f"answering GET /health on {self.addr} (see its log below)"
                )
            try:
                resp = self.api.health()
                if resp.status == 200:
                    return time.monotonic() - started
                last = resp.describe()
            except OSError as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.05)
        raise CaseFailure(
            f"{self.node_id} did not answer 200 on GET http://{self.addr}/health within "
            f"{timeout:.0f}s (last: {last})"
        )

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, wait, then SIGKILL the process group. Returns the exit status."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill_group()
                proc.wait(10)
        self._kill_group()  # stray children, if any
        self.proc = None
        return proc.returncode

    def kill9(self) -> None:
        """kill -9 of the server (its whole process group), as a crash would."""
        proc = self.proc
        if proc is None:
            return
        self._kill_group()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        self.proc = None

    def _kill_group(self) -> None:
        proc = self.proc
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def restart(self, *extra: str, wait: bool = True) -> None:
        self.stop()
        self.start(*extra, wait=wait)

    def run(
        self,
        *extra: str,
        timeout: float = 60.0,
        config: Path | None = None,
        node_id: str | None = None,
    ) -> RunResult:
        """Run the server command to completion (e.g. `--init`), capturing its output."""
        cmd = self.command(*extra, config=config, node_id=node_id)
        result = run_command(cmd, cwd=self.cluster.dir, env=self.env(), timeout=timeout)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a", encoding="utf-8") as log:
            log.write(
                f"\n===== run: {' '.join(cmd)} -> {result.returncode} in {result.seconds:.2f}s\n"
            )
            log.write(result.stdout)
            log.write(result.stderr)
        return result

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    # disk -----------------------------------------------------------------

    def slot_dir(self, slot: int) -> Path:
        return self.disk / "slots" / str(slot)

    def slot_db_path(self, slot: int) -> Path:
        return self.slot_dir(slot) / "meta.sqlite3"

    def open_slot_db(self, slot: int) -> sqlite3.Connection:
        path = self.slot_db_path(slot)
        check(path.is_file(), f"{self.node_id}: {path} does not exist")
        conn = sqlite3.connect(str(path), timeout=30.0)
        conn.row_factory = sqlite3.Row
        return conn


class Cluster:
    """A set of nodes sharing one registry namespace, with generated per-node configs."""

    def __init__(
        self,
        case: Case,
        label: str,
        *,
        nodes: int,
        min_write_replicas: int,
        total_slots: int,
        part_size: int | None = None,
        replicas: int | None = None,
        extra_config: Mapping[str, object] | None = None,
    ) -> None:
        self.case = case
        self.label = label
        self.dir = case.tmp / label
        self.dir.mkdir(parents=True, exist_ok=False)
        self.namespace = f"amberio-it-{case.name[:3]}-{label}-{secrets.token_hex(4)}"
        case.namespaces.append(self.namespace)
        if min_write_replicas > nodes:
            case.note(f"min_write_replicas {min_write_replicas} > {nodes} node(s): using W={nodes}")
            min_write_replicas = nodes
        self.min_write_replicas = min_write_replicas
        self.total_slots = total_slots
        self.part_size = part_size
        self.nodes: list[Node] = [Node(self, i, case.ports.take()) for i in range(nodes)]
        for node in self.nodes:
            node.disk.mkdir(parents=True)
        replication: dict[str, Any] = {
            "min_write_replicas": min_write_replicas,
            "total_slots": total_slots,
        }
        if replicas is not None:
            replication["replicas"] = replicas
        if part_size is not None:
            replication["part_size"] = part_size
        for node in self.nodes:
            cfg: dict[str, Any] = {
                "current_node": node.node_id,
                "registry": {
                    "backend": "redis",
                    "namespace": self.namespace,
                    "redis": {"url": case.opts.redis_url, "pool_size": 4},
                },
                "initial_cluster": {
                    "nodes": [
                        {
                            "node_id": n.node_id,
                            "bind_addr": n.addr,
                            "advertise_addr": n.addr,
                            "disks": [{"path": str(n.disk)}],
                        }
                        for n in self.nodes
                    ],
                    "replication": dict(replication),
                },
            }
            for key, value in (extra_config or {}).items():
                cfg[key] = json.loads(json.dumps(value))
            node.config = cfg
            node.write_config()

    def __getitem__(self, index: int) -> Node:
        return self.nodes[index]

    def node(self, node_id: str) -> Node:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise CaseFailure(f"unknown node id {node_id!r} (cluster has {self.node_ids()})")

    def node_ids(self) -> list[str]:
        return [n.node_id for n in self.nodes]

    def start(self) -> None:
        for node in self.nodes:
            node.start(wait=False)
        for node in self.nodes:
            node.wait_healthy()

    def stop(self) -> None:
        for node in self.nodes:
            try:
                node.stop()
            except Exception as exc:  # keep stopping the others
                print(f"[harness] stopping {node.node_id}: {exc}", file=sys.stderr)

    def replicas_of(self, path: str, via: Node | None = None) -> list[Node]:
        doc = (via or self.nodes[0]).api.resolve(path)
        ids = doc.get("replicas")
        check(isinstance(ids, list), f"slots/resolve?path={path!r}: replicas is {ids!r}")
        assert isinstance(ids, list)
        return [self.node(str(i)) for i in ids]


# --------------------------------------------------------------------------- disk checks


def _looks_temporary(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in ("tmp", "temp", "partial", "upload", "staging"))


def find_stray_files(disk: Path) -> list[str]:
    """Files on a node's disk that are neither identity, SQLite, nor complete part files.

    A complete part file (`g.<n>/part.<no:08>.<sha256>` whose bytes hash to its name) is not
    stray even without a row: §9 lets GC reclaim those later. A file beside a complete part whose
    name starts with the part's name (a checksum sidecar) is accepted too. Anything else (a temp
    file, a half-written part) is reported.
    """
    stray: list[str] = []
    if not disk.exists():
        return stray
    for dirpath, _dirnames, filenames in os.walk(disk):
        here = Path(dirpath)
        rel = here.relative_to(disk)
        parts = rel.parts
        complete_parts: set[str] = set()
        for name in filenames:
            match = PART_FILE_RE.match(name)
            if match and sha256_hex((here / name).read_bytes()) == match.group(2):
                complete_parts.add(name)
        for name in filenames:
            full = here / name
            if parts[:1] == ("amberio",):
                if _looks_temporary(str(full.relative_to(disk))):
                    stray.append(str(full))
                continue
            if len(parts) == 2 and parts[0] == "slots" and SQLITE_FILE_RE.match(name):
                continue
            if name in complete_parts:
                continue
            if any(name.startswith(p + ".") for p in complete_parts):
                continue
            stray.append(str(full))
    return stray


def resolve_external(slot_dir: Path, external_path: str) -> Path:
    p = Path(external_path)
    return p if p.is_absolute() else slot_dir / p


def check_heads_complete(node: Node) -> int:
    """Every visible `meta` head on the node has all its parts, present and verified.

    Returns the number of heads checked.
    """
    slots_dir = node.disk / "slots"
    checked = 0
    if not slots_dir.is_dir():
        return 0
    for slot_dir in sorted(slots_dir.iterdir()):
        db = slot_dir / "meta.sqlite3"
        if not db.is_file():
            continue
        conn = sqlite3.connect(str(db), timeout=30.0)
        conn.row_factory = sqlite3.Row
        try:
            heads = conn.execute(
                "SELECT blob_path, file_kind, generation, inline_data FROM file_entries "
                "WHERE file_kind IN ('meta', 'tombstone') ORDER BY blob_path, generation"
            ).fetchall()
            latest: dict[str, sqlite3.Row] = {}
            for row in heads:
                latest[row["blob_path"]] = row
            for path, row in latest.items():
                if row["file_kind"] != "meta":
                    continue
                checked += 1
                meta = json.loads(bytes(row["inline_data"]))
                gen = int(row["generation"])
                if meta.get("part_index_state", "complete") != "complete":
                    continue
                count = int(meta["part_count"])
                rows = conn.execute(
                    "SELECT part_no, external_path, sha256, size_bytes FROM file_entries "
                    "WHERE blob_path = ? AND generation = ? AND file_kind = 'part' "
                    "ORDER BY part_no",
                    (path, gen),
                ).fetchall()
                nos = sorted({int(r["part_no"]) for r in rows})
                check(
                    nos == list(range(count)),
                    f"{node.node_id} slot {slot_dir.name}: head of {path!r} (generation {gen}) "
                    f"has part_count {count} but part rows {nos}: a partial head is visible",
                )
                for r in rows:
                    f = resolve_external(slot_dir, str(r["external_path"]))
                    check(
                        f.is_file(),
                        f"{node.node_id}: part {r['part_no']} of {path!r} g{gen}: {f} is missing",
                    )
                    check(
                        sha256_hex(f.read_bytes()) == r["sha256"],
                        f"{node.node_id}: part {r['part_no']} of {path!r} g{gen}: {f} does "
                        f"not hash to its row's sha256",
                    )
        finally:
            conn.close()
    return checked


# --------------------------------------------------------------------------- case


class Case:
    def __init__(self, name: str, opts: Options, binary: Path, tmp: Path) -> None:
        self.name = name
        self.opts = opts
        self.binary = binary
        self.tmp = tmp
        self.ports = PortAllocator(opts.base_port)
        self.clusters: list[Cluster] = []
        self.namespaces: list[str] = []
        self.notes: list[str] = []
        self.failures: list[str] = []

    def note(self, message: str) -> None:
        self.notes.append(message)
        print(f"[{self.name}] note: {message}", flush=True)

    def expect(self, condition: bool, message: str) -> None:
        """A soft check: recorded, the case goes on, and fails at the end."""
        if not condition:
            self.failures.append(message)
            print(f"[{self.name}] CHECK FAILED: {message}", flush=True)

    def soft(self, label: str, block: Callable[[], object]) -> None:
        """Run an independent group of checks; its failure is recorded and the case goes on."""
        try:
            block()
        except CaseFailure as exc:
            self.expect(False, f"{label}: {exc}")

    def step(self, message: str) -> None:
        print(f"[{self.name}] {message}", flush=True)

    def cluster(
        self,
        label: str | None = None,
        *,
        nodes: int | None = None,
        min_write_replicas: int | None = None,
        total_slots: int | None = None,
        part_size: int | None = None,
        replicas: int | None = None,
        extra_config: Mapping[str, object] | None = None,
        start: bool = True,
    ) -> Cluster:
        """A cluster with the case's options unless overridden; started unless start=False."""
        cluster = Cluster(
            self,
            label or f"c{len(self.clusters) + 1}",
            nodes=nodes if nodes is not None else self.opts.nodes,
            min_write_replicas=(
                min_write_replicas
                if min_write_replicas is not None
                else self.opts.min_write_replicas
            ),
            total_slots=total_slots if total_slots is not None else self.opts.total_slots,
            part_size=part_size,
            replicas=replicas,
            extra_config=extra_config,
        )
        self.clusters.append(cluster)
        if start:
            cluster.start()
        return cluster

    def all_nodes(self) -> Iterator[Node]:
        for cluster in self.clusters:
            yield from cluster.nodes

    def print_logs(self) -> None:
        for node in self.all_nodes():
            print(
                f"----- tail of {node.cluster.label}/{node.node_id} log ({node.log_path}) -----",
                file=sys.stderr,
            )
            print(node.log_tail(), file=sys.stderr)

    def cleanup(self) -> None:
        for cluster in self.clusters:
            cluster.stop()
        for namespace in self.namespaces:
            with contextlib.suppress(Exception):
                delete_namespace_keys(self.opts.redis_url, namespace)
        if self.opts.keep_artifacts:
            print(f"[{self.name}] artifacts kept in {self.tmp}", flush=True)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def _sigterm_to_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def run_case(
    main: Callable[[Case], None],
    *,
    defaults: Mapping[str, object] | None = None,
    description: str | None = None,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
    argv: Sequence[str] | None = None,
) -> int:
    """Run one case; 0 pass, 1 fail, 77 skipped. Use as `raise SystemExit(run_case(main))`."""
    source = inspect.getsourcefile(main) or sys.argv[0]
    name = Path(source).stem
    doc = description or (inspect.getmodule(main).__doc__ if inspect.getmodule(main) else None)
    opts = parse_options(
        argv,
        description=(doc or name).strip(),
        defaults=defaults or {},
        add_arguments=add_arguments,
    )
    signal.signal(signal.SIGTERM, _sigterm_to_exit)
    if opts.unknown:
        print(f"[{name}] note: ignoring arguments this case does not use: {opts.unknown}")
    started = time.monotonic()
    try:
        check_redis(opts.redis_url)
        binary = resolve_binary(opts)
    except SetupError as exc:
        print(f"FAIL {name}: {exc}", file=sys.stderr, flush=True)
        return EXIT_FAIL
    tmp = Path(tempfile.mkdtemp(prefix=f"amberio-it-{name[:3]}-"))
    case = Case(name, opts, binary, tmp)
    outcome = EXIT_FAIL
    try:
        main(case)
        if case.failures:
            count = len(case.failures)
            raise CaseFailure(f"{count} check(s) failed:\n  - " + "\n  - ".join(case.failures))
        outcome = EXIT_PASS
    except CaseSkipped as exc:
        print(f"SKIP {name}: {exc}", flush=True)
        outcome = EXIT_SKIP
    except CaseFailure as exc:
        print(f"FAIL {name}: {exc}", file=sys.stderr, flush=True)
        case.print_logs()
    except SetupError as exc:
        print(f"FAIL {name}: {exc}", file=sys.stderr, flush=True)
        case.print_logs()
    except (Exception, KeyboardInterrupt, SystemExit) as exc:
        traceback.print_exc()
        print(f"FAIL {name}: unexpected {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        case.print_logs()
    finally:
        case.cleanup()
    if outcome == EXIT_PASS:
        print(f"PASS {name} ({time.monotonic() - started:.1f}s)", flush=True)
    return outcome


# --------------------------------------------------------------------------- cluster helpers


def node_statuses(node: Node, timeout: float = 5.0) -> dict[str, str]:
    """`GET /nodes` on `node` as {node_id: status}."""
    resp = expect_status(
        node.api.request("GET", f"{node.api.api_prefix}/nodes", timeout=timeout),
        200,
        f"GET nodes on {node.node_id}",
    )
    doc = resp.json()
    items = doc.get("nodes") if isinstance(doc, dict) else None
    check(isinstance(items, list), f"GET nodes on {node.node_id}: {resp.describe()}")
    assert isinstance(items, list)
    return {str(i.get("node_id")): str(i.get("status")) for i in items if isinstance(i, dict)}


def wait_statuses(observers: Sequence[Node], expected: Mapping[str, str], timeout: float) -> float:
    """Poll `GET /nodes` on every observer until each reports `expected` (a subset of the
    node ids); returns the seconds waited, raises CaseFailure naming the last view at timeout."""
    started = time.monotonic()

    def probe() -> None:
        for obs in observers:
            seen = node_statuses(obs)
            got = {k: seen.get(k) for k in expected}
            check(got == dict(expected), f"{obs.node_id} reports {seen}, expected {expected}")

    eventually(probe, timeout, interval=0.2)
    return time.monotonic() - started


def wait_writable(cluster: Cluster, timeout: float = 15.0) -> None:
    """Wait until every running node reports every running node healthy and a PUT of a
    probe blob (`_probe/<node_id>`) through each running node is acknowledged."""
    running = [n for n in cluster.nodes if n.running]
    wait_statuses(running, {n.node_id: "healthy" for n in running}, timeout)
    for node in running:

        def probe(node: Node = node) -> None:
            target = node.api.blob_target(f"_probe/{node.node_id}")
            resp = node.api.request("PUT", target, b"probe", timeout=10.0)
            expect_status(resp, (200, 201), f"probe PUT through {node.node_id}")

        eventually(probe, timeout, interval=0.2)


# --------------------------------------------------------------------------- Redis archive keys


class RedisArchiveKeys:
    """A case's Redis archive (§10.1): the `archive:` section that writes blobs under a key
    prefix of the case's own (`amberio-it-<case_no>:<random>`), a client to look at them, and
    (`close`, or leaving the `with`) their removal."""

    def __init__(self, url: str, case_no: str) -> None:
        import redis

        self.url = url
        self.key_prefix = f"amberio-it-{case_no}:{secrets.token_hex(4)}"
        self.client = redis.Redis.from_url(url)

    def archive_config(self, url: str | None = None) -> dict[str, Any]:
        """The `archive:` section of §2 (Redis at `url`, by default the case's Redis)."""
        return {
            "archive_type": "redis",
            "redis": {"url": url or self.url, "key_prefix": self.key_prefix},
        }

    def __enter__(self) -> RedisArchiveKeys:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove every key under the prefix and close the client."""
        try:
            for found in self.client.scan_iter(match=f"{self.key_prefix}*"):
                self.client.delete(found)
        finally:
            self.client.close()


# --------------------------------------------------------------------------- S3 gateway (§12)


class S3Gateway:
    """The S3 API of a case's cluster (§12) with one key pair of the case's own."""

    def __init__(self, access_key: str, secret_key: str, region: str = "us-east-1") -> None:
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region

    def config(self) -> dict[str, Any]:
        """The `s3:` section of §2 that accepts this key pair."""
        credentials = [{"access_key_id": self.access_key, "secret_access_key": self.secret_key}]
        return {"s3": {"credentials": credentials}}

    def client(self, node: Node, **config: Any) -> Any:
        """boto3 at its default settings but two attempts (plus `config`), at one node."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=f"http://{node.addr}",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(retries={"max_attempts": 2}, **config),
        )

    def signed_request(
        self, node: Node, method: str, target: str, headers: dict[str, str], body: bytes = b""
    ) -> Response:
        """A request signed (SigV4) by botocore's signer, sent with the harness's HTTP
        client; `target` is sent as given (already encoded)."""
        from botocore.auth import S3SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        request = AWSRequest(
            method=method, url=f"http://{node.addr}{target}", headers=dict(headers), data=body
        )
        credentials = Credentials(self.access_key, self.secret_key)
        S3SigV4Auth(credentials, "s3", self.region).add_auth(request)
        signed = {
            k: (v.decode() if isinstance(v, bytes) else v) for k, v in request.headers.items()
        }
        return http_request("127.0.0.1", node.port, method, target, body or None, signed)


def s3_error_of(exc: Exception) -> tuple[int, str]:
    """The HTTP status and S3 error code of a botocore ClientError."""
    response: Any = getattr(exc, "response", {})
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


# --------------------------------------------------------------------------- S3 archive target

S3_ENV = (
    "AMBERIO_S3_ENDPOINT",
    "AMBERIO_S3_BUCKET",
    "AMBERIO_S3_ACCESS_KEY_ID",
    "AMBERIO_S3_SECRET_ACCESS_KEY",
)


@dataclass(frozen=True)
class S3Target:
    """The S3 endpoint of the S3 archive cases (012, 025, 026): a pre-created bucket on an
    S3-compatible server (`make test` starts SeaweedFS for them), from `AMBERIO_S3_*`."""

    endpoint: str
    bucket: str
    region: str
    access_key_id: str
    secret_access_key: str

    def client(self) -> Any:
        """A boto3 client at today's default settings (checksums and all)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
        )

    def archive_config(
        self,
        prefix: str,
        *,
        endpoint: str | None = None,
        secret_access_key: str | None = None,
        layout: str | None = None,
    ) -> dict[str, Any]:
        """The `archive:` section of §2 for this bucket (objects under `prefix`)."""
        config: dict[str, Any] = {
            "archive_type": "s3",
            "s3": {
                "bucket": self.bucket,
                "region": self.region,
                "endpoint": endpoint or self.endpoint,
                "allow_http": True,
                "prefix": prefix,
                "credentials": {
                    "access_key_id": self.access_key_id,
                    "secret_access_key": secret_access_key or self.secret_access_key,
                },
            },
        }
        if layout is not None:
            config["layout"] = layout
        return config

    @contextlib.contextmanager
    def case_prefix(self, case_no: str) -> Iterator[str]:
        """A key prefix of the case's own (`it-<case_no>-<random>`), emptied when it ends."""
        prefix = f"it-{case_no}-{secrets.token_hex(4)}"
        try:
            yield prefix
        finally:
            self.delete_prefix(prefix)

    def delete_prefix(self, prefix: str) -> None:
        """Remove every object under `prefix/` (a case's clean-up)."""
        client = self.client()
        token: str | None = None
        while True:
            request: dict[str, Any] = {"Bucket": self.bucket, "Prefix": f"{prefix}/"}
            if token:
                request["ContinuationToken"] = token
            page = client.list_objects_v2(**request)
            for item in page.get("Contents") or []:
                client.delete_object(Bucket=self.bucket, Key=item["Key"])
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return


def s3_target() -> S3Target:
    """The S3 archive target from the environment; SetupError naming what is missing."""
    missing = [name for name in S3_ENV if not os.environ.get(name)]
    if missing:
        raise SetupError(
            f"this S3 archive case needs {', '.join(missing)} (an S3-compatible endpoint with a "
            "pre-created bucket and its keys; AMBERIO_S3_REGION optional). `make test` starts "
            "SeaweedFS and sets them; by hand: `.venv/bin/weed mini -s3.config=...` and export "
            "the AMBERIO_S3_* variables"
        )
    target = S3Target(
        endpoint=os.environ["AMBERIO_S3_ENDPOINT"],
        bucket=os.environ["AMBERIO_S3_BUCKET"],
        region=os.environ.get("AMBERIO_S3_REGION") or "us-east-1",
        access_key_id=os.environ["AMBERIO_S3_ACCESS_KEY_ID"],
        secret_access_key=os.environ["AMBERIO_S3_SECRET_ACCESS_KEY"],
    )
    try:
        target.client().head_bucket(Bucket=target.bucket)
    except Exception as exc:
        raise SetupError(
            f"the S3 archive target {target.endpoint} bucket {target.bucket!r} does not answer "
            f"HeadBucket ({type(exc).__name__}: {exc})"
        ) from None
    return target


def part_names(directory: Path) -> dict[int, str]:
    """{part_no: file name} of the `part.<no:08>.<sha256>` files in a `g.<gen>` directory."""
    found: dict[int, str] = {}
    if directory.is_dir():
        for entry in directory.iterdir():
            match = PART_FILE_RE.match(entry.name)
            if match:
                found[int(match.group(1))] = entry.name
    return found


def process_rss(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in bytes of the process group led by `pid` (sums over its members),
    from /proc; (0, 0) when it is gone."""
    rss = hwm = 0
    for member, _ in group_members(pid) or [(pid, "")]:
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                rss += int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                hwm += int(line.split()[1]) * 1024
    return rss, hwm
