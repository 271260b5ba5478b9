"""Logging set-up: one line per event on stderr, with the node id.

    2026-01-02T03:04:05.678Z INFO node=node-1 amberio.cluster.bootstrap: node node-1 ...

`AMBERIO_LOG` sets the level: a bare level (`debug`, `info`, `warning`, `error`) and/or
`RUST_LOG`-style directives `target=level`, comma-separated (`info,amberio.http=debug`).
granian's own loggers are kept at warning unless a directive names them.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping
from typing import Final, TextIO

ENV_VAR: Final = "AMBERIO_LOG"
DEFAULT_LEVEL: Final = logging.INFO
QUIET_LOGGERS: Final = ("granian", "granian.access", "granian.server", "_granian")

_LEVELS: Final[dict[str, int]] = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
    "off": logging.CRITICAL + 10,
}

_node_id = "-"
_handler: logging.Handler | None = None


class _NodeFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.node_id = _node_id
        return True


class OneLineFormatter(logging.Formatter):
    """`<UTC time> <LEVEL> node=<id> <logger>: <message>`; newlines escaped (tracebacks too)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s node=%(node_id)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{seconds}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "node_id"):
            record.node_id = _node_id
        text = super().format(record)
        return text.replace("\r", "").replace("\n", "\\n")


def parse_log_spec(spec: str) -> tuple[int | None, dict[str, int]]:
    """`"info,amberio.http=debug"` → (INFO, {"amberio.http": DEBUG}). ValueError if bad."""
    default: int | None = None
    targets: dict[str, int] = {}
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            continue
        target, sep, level_name = item.rpartition("=")
        level = _LEVELS.get(level_name.strip().lower())
        if level is None:
            raise ValueError(f"unknown log level {level_name.strip()!r} in {ENV_VAR}={spec!r}")
        if sep:
            name = target.strip().replace("::", ".")
            if not name:
                raise ValueError(f"empty target in {ENV_VAR}={spec!r}")
            targets[name] = level
        else:
            default = level
    return default, targets


def set_node_id(node_id: str | None) -> None:
    """Change the `node=` field of later lines (e.g. once bootstrap knows the node)."""
    global _node_id
    _node_id = node_id or "-"


def setup_logging(
    node_id: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    stream: TextIO | None = None,
) -> None:
    """Route all logging to one stderr handler, one line per event. Idempotent."""
    global _handler
    set_node_id(node_id)
    environ = os.environ if env is None else env
    spec = environ.get(ENV_VAR, "")
    problem: str | None = None
    try:
        default, targets = parse_log_spec(spec)
    except ValueError as exc:
        default, targets, problem = None, {}, str(exc)

    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(OneLineFormatter())
    handler.addFilter(_NodeFilter())
    root.addHandler(handler)
    _handler = handler

    level = default if default is not None else DEFAULT_LEVEL
    root.setLevel(level)
    logging.getLogger("amberio").setLevel(level)
    for name in QUIET_LOGGERS:
        if name not in targets:
            quiet = logging.getLogger(name)
            quiet.setLevel(max(logging.WARNING, level))
    for name, target_level in targets.items():
        logging.getLogger(name).setLevel(target_level)
    logging.captureWarnings(True)
    if problem is not None:
        logging.getLogger("amberio").warning("%s; using info", problem)
