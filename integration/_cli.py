"""The common flags of contract §13 (`Options`), and the `amberio` executable they name
(found in the repo's environment, or built with `uv sync` when --build-if-missing)."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _checks import SetupError

REPO_ROOT = Path(__file__).resolve().parent.parent
INTEGRATION_DIR = REPO_ROOT / "integration"
DEFAULT_BINARY = REPO_ROOT / ".venv" / "bin" / "amberio"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379"


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
