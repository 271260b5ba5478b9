"""What the cases do with redis-py: check that the registry Redis answers, remove a finished
case's registry keys, and the Redis archive of the Redis archive cases (`RedisArchiveKeys`)."""

from __future__ import annotations

import contextlib
import secrets
from typing import Any

from _checks import SetupError


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
