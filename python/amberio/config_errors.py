"""One-line messages for configuration errors (contract §2: name the file and key path).

`error(source, where, problem)` builds a `ConfigError`; `validation_error` turns a msgspec
`ValidationError` into one naming the key path (`initial_cluster.nodes[1].bind_addr`);
`yaml_reason` shortens a PyYAML error to one line. Values of keys that look secret are never
echoed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Final

import msgspec
import yaml

from amberio.errors import ConfigError

_ENUM_CHOICES: Final[dict[str, tuple[str, ...]]] = {
    "backend": ("redis", "local"),
    "archive_type": ("s3", "redis"),
    "layout": ("mirror", "versioned"),
    "read_consistency": ("quorum", "local"),
}
_SECRET_HINTS: Final = ("secret", "password", "url", "access_key")
_AT_RE: Final = re.compile(r"^(?P<msg>.*?)(?: - at `(?P<path>[^`]*)`)?$", re.S)
_KEY_RE: Final = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")


def error(source: str, where: str, problem: str) -> ConfigError:
    return ConfigError(f"{source}: {where}: {problem}" if where else f"{source}: {problem}")


def validation_error(
    source: str, exc: msgspec.ValidationError, data: object, prefix: str
) -> ConfigError:
    text = str(exc)
    if key_error := re.match(r"^(?P<msg>.*) - at `key` in `(?P<path>[^`]*)`$", text, re.S):
        rel = key_error["path"][1:]
        where = f"{prefix}.{rel.lstrip('.')}".strip(".") if prefix else rel.lstrip(".")
        return error(source, where, "mapping keys must be strings")
    match = _AT_RE.match(text)
    message = match["msg"] if match else text
    raw_path = (match["path"] if match else None) or "$"
    rel = raw_path[1:] if raw_path.startswith("$") else raw_path
    keys: list[str | int] = [
        m.group(1) if m.group(1) is not None else int(m.group(2)) for m in _KEY_RE.finditer(rel)
    ]
    problem: str
    if found := re.match(r"Object contains unknown field `(.*)`", message):
        problem = "unknown top-level key" if not rel and not prefix else "unknown key"
        rel += f".{found[1]}"
    elif found := re.match(r"Object missing required field `(.*)`", message):
        rel += f".{found[1]}"
        problem = "missing required key"
    elif found := re.match(r"Invalid enum value (.*)", message):
        last = next((k for k in reversed(keys) if isinstance(k, str)), "")
        choices = _ENUM_CHOICES.get(last)
        problem = f"unknown value {found[1]}"
        if choices:
            problem += f" (expected one of: {', '.join(choices)})"
    else:
        problem = message[:1].lower() + message[1:]
        problem = problem.replace("`", "").replace("object", "mapping")
        problem = problem.replace("array", "list").replace(" | null", "")
        value = _lookup(data, keys)
        last = next((k for k in reversed(keys) if isinstance(k, str)), "")
        secret = any(h in last for h in _SECRET_HINTS)
        if not secret and (isinstance(value, str | int | float | bool) or value is None):
            shown = repr(value)
            problem += f" ({shown[:60] + '...' if len(shown) > 60 else shown})"
    path = rel.lstrip(".")
    if prefix:
        path = f"{prefix}{'' if path.startswith('[') or not path else '.'}{path}"
    return error(source, path, problem)


_MISSING: Final = object()


def _lookup(data: object, keys: Sequence[str | int]) -> object:
    current = data
    for key in keys:
        if isinstance(key, int) and isinstance(current, list) and 0 <= key < len(current):
            current = current[key]
            continue
        if isinstance(key, str) and isinstance(current, Mapping) and key in current:
            current = current[key]
            continue
        return _MISSING
    return current


def type_name(value: object) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    return type(value).__name__


def yaml_reason(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "syntax error"
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        return " ".join(f"{where}{problem}".split())
    return " ".join(str(exc).split())
