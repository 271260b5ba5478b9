"""The S3 side of the cases, over boto3: the S3 API of a case's cluster (`S3Gateway`, §11) and the
S3 archive target of the S3 archive cases (`S3Target`, from `AMBERIO_S3_*`; `make test` starts
SeaweedFS for it)."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from _checks import SetupError
from _http import Response, http_request

if TYPE_CHECKING:
    from _cluster import Node


# --------------------------------------------------------------------------- S3 gateway (§11)


class S3Gateway:
    """The S3 API of a case's cluster (§11) with one key pair of the case's own."""

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
