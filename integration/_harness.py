"""Shared machinery for the integration cases (contract §13): the one module every case imports.

A case is a numbered script `integration/NNN_name.py` that calls `run_case(main, defaults=...)`.
The harness parses the common flags, checks that Redis answers (it never starts one), finds or
builds the `amberio` executable, gives the case a temp folder and a port allocator, starts and
stops real nodes (`amberio server --config <file> --current-node <id>`), and turns the outcome into
an exit status: 0 pass, 1 fail (with a clear message and the tail of every node's log), 77 skip.

The machinery lives in the modules beside this one (found the same way, from the script's own
directory on sys.path); this module re-exports their public names:

- `_checks`: outcomes (CaseFailure, CaseSkipped, SetupError), checks, hashes and test bytes
- `_cli`: the common flags (`Options`) and the `amberio` executable
- `_case`: `run_case`, `Case` and the exit statuses
- `_cluster`: ports, per-node configs, `Node` processes, `Cluster`, waiting for agreement
- `_http`: the HTTP client, the native API of a node (`Api`), checks on responses
- `_disk`: a node's disk layout (§5) and the checks on it
- `_processes`: child processes and /proc
- `_redis`: the registry Redis (reachability, key clean-up) and `RedisArchiveKeys`
- `_s3`: boto3, for the S3 gateway (`S3Gateway`) and the S3 archive target (`S3Target`)

Only the standard library, plus redis-py (`_redis`) and boto3 (`_s3`).
"""

from __future__ import annotations

from _case import EXIT_FAIL, EXIT_PASS, EXIT_SKIP, Case, run_case
from _checks import (
    CaseFailure,
    CaseSkipped,
    SetupError,
    check,
    eventually,
    expect_eq,
    fail,
    md5_hex,
    parse_rfc3339,
    pattern_bytes,
    sha256_hex,
    skip,
    slot_for,
)
from _cli import (
    DEFAULT_BINARY,
    DEFAULT_REDIS_URL,
    INTEGRATION_DIR,
    REPO_ROOT,
    Options,
    add_common_arguments,
    parse_options,
    resolve_binary,
)
from _cluster import (
    HEALTH_TIMEOUT,
    LOG_TAIL_LINES,
    STOP_TIMEOUT,
    Cluster,
    Node,
    PortAllocator,
    node_statuses,
    port_is_free,
    port_is_listening,
    to_yaml,
    wait_statuses,
    wait_writable,
)
from _disk import (
    FILE_ENTRIES_COLUMNS,
    GEN_DIR_RE,
    INDEX_COLUMNS,
    META_FIELDS,
    PART_FILE_RE,
    SQLITE_FILE_RE,
    check_heads_complete,
    find_stray_files,
    part_names,
    resolve_external,
)
from _http import (
    Api,
    Response,
    expect_error_body,
    expect_status,
    hang_up_mid_body,
    http_request,
    quote_path,
    strip_etag,
)
from _processes import RunResult, group_members, process_rss, processes_mentioning, run_command
from _redis import RedisArchiveKeys, check_redis, delete_namespace_keys
from _s3 import S3_ENV, S3Gateway, S3Target, s3_error_of, s3_target

__all__ = [
    "DEFAULT_BINARY",
    "DEFAULT_REDIS_URL",
    "EXIT_FAIL",
    "EXIT_PASS",
    "EXIT_SKIP",
    "FILE_ENTRIES_COLUMNS",
    "GEN_DIR_RE",
    "HEALTH_TIMEOUT",
    "INDEX_COLUMNS",
    "INTEGRATION_DIR",
    "LOG_TAIL_LINES",
    "META_FIELDS",
    "PART_FILE_RE",
    "REPO_ROOT",
    "S3_ENV",
    "SQLITE_FILE_RE",
    "STOP_TIMEOUT",
    "Api",
    "Case",
    "CaseFailure",
    "CaseSkipped",
    "Cluster",
    "Node",
    "Options",
    "PortAllocator",
    "RedisArchiveKeys",
    "Response",
    "RunResult",
    "S3Gateway",
    "S3Target",
    "SetupError",
    "add_common_arguments",
    "check",
    "check_heads_complete",
    "check_redis",
    "delete_namespace_keys",
    "eventually",
    "expect_eq",
    "expect_error_body",
    "expect_status",
    "fail",
    "find_stray_files",
    "group_members",
    "hang_up_mid_body",
    "http_request",
    "md5_hex",
    "node_statuses",
    "parse_options",
    "parse_rfc3339",
    "part_names",
    "pattern_bytes",
    "port_is_free",
    "port_is_listening",
    "process_rss",
    "processes_mentioning",
    "quote_path",
    "resolve_binary",
    "resolve_external",
    "run_case",
    "run_command",
    "s3_error_of",
    "s3_target",
    "sha256_hex",
    "skip",
    "slot_for",
    "strip_etag",
    "to_yaml",
    "wait_statuses",
    "wait_writable",
]
