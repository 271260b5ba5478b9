#!/usr/bin/env python3
"""019: the AWS CLI against the S3 gateway, and keys that need encoding (contract §11, §4).

On a cluster with `s3.credentials` configured:
- `aws s3 cp` up and down (a small file, and a 20 MiB one that the CLI sends as a multipart
  upload), `aws s3 ls`, `aws s3 sync` of a folder of 200 small files (and a second sync that
  uploads nothing), `aws s3 rm --recursive`; listings and bytes checked through boto3;
- keys with spaces, unicode, `+`, `%`, `?`, `#`, `//`, `./..` segments and control characters
  round-trip through PutObject / GetObject / ListObjectsV2 / DeleteObject with boto3.

The AWS CLI (`awscli` from PyPI) is looked for in the repo's .venv, this project's environment,
then on PATH; without it the CLI half is skipped (noted) and the keys half still runs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from _harness import (
    REPO_ROOT,
    Case,
    Node,
    S3Gateway,
    check,
    expect_eq,
    fail,
    pattern_bytes,
    run_case,
)

ACCESS_KEY = "AKIDINTEGRATION019"
SECRET_KEY = "integration-019-secret"
GATEWAY = S3Gateway(ACCESS_KEY, SECRET_KEY)
BUCKET = "case-019"
MIB = 1024 * 1024

ODD_KEYS = [
    "with space.txt",
    "plus+sign",
    "percent%25literal%zz",
    "unicode/ünïcødé/日本語/😀",
    "question?mark#hash&amp=eq",
    "double//slash",
    "/leading-slash",
    "dots/./and/../segments",
    "trailing-slash/",
    "control\x01chars\x1f\x7f",
    "tab\tand\nnewline\rreturn",
    "quote\"apos'lt<gt>amp&",
    "~tilde!star*paren()",
]


def find_aws() -> str | None:
    for candidate in (
        REPO_ROOT / ".venv" / "bin" / "aws",
        Path(sys.prefix) / "bin" / "aws",
    ):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("aws")
    if found is None:
        return None
    probe = subprocess.run([found, "--version"], capture_output=True, text=True, check=False)
    return found if probe.returncode == 0 else None


class AwsCli:
    def __init__(self, executable: str, node: Node, home: Path) -> None:
        self.executable = executable
        self.node = node
        home.mkdir(parents=True, exist_ok=True)
        self.env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("AWS_") and key not in ("VIRTUAL_ENV",)
        }
        self.env.update(
            AWS_ACCESS_KEY_ID=ACCESS_KEY,
            AWS_SECRET_ACCESS_KEY=SECRET_KEY,
            AWS_DEFAULT_REGION="us-east-1",
            AWS_CONFIG_FILE=str(home / "config"),
            AWS_SHARED_CREDENTIALS_FILE=str(home / "credentials"),
            AWS_PAGER="",
            HOME=str(home),
        )

    def run(self, *args: str, timeout: float = 300.0) -> str:
        cmd = [self.executable, "--endpoint-url", f"http://{self.node.addr}", *args]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=self.env, timeout=timeout, check=False
        )
        if proc.returncode != 0:
            fail(
                f"`aws {' '.join(args)}` exited {proc.returncode}: {proc.stderr[-1500:]}"
                f"{proc.stdout[-500:]}"
            )
        return proc.stdout


def all_keys(s3: Any, prefix: str) -> list[str]:
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        keys += [c["Key"] for c in page.get("Contents", [])]
    return keys


def main(case: Case) -> None:
    cluster = case.cluster(extra_config=GATEWAY.config())
    node = cluster[0]
    s3 = GATEWAY.client(node)
    other = GATEWAY.client(cluster[len(cluster.nodes) - 1])

    def odd_keys() -> None:
        for index, key in enumerate(ODD_KEYS):
            s3.put_object(Bucket=BUCKET, Key=f"keys/{key}", Body=f"value {index}".encode())
        for index, key in enumerate(ODD_KEYS):
            got = other.get_object(Bucket=BUCKET, Key=f"keys/{key}")["Body"].read()
            expect_eq(got, f"value {index}".encode(), f"GetObject of key {key!r}")
        listed = all_keys(s3, "keys/")
        expect_eq(listed, sorted(f"keys/{k}" for k in ODD_KEYS), "keys listed (encoding-type=url)")
        for key in ODD_KEYS:
            s3.delete_object(Bucket=BUCKET, Key=f"keys/{key}")
            try:
                other.head_object(Bucket=BUCKET, Key=f"keys/{key}")
            except ClientError as exc:
                expect_eq(
                    exc.response["ResponseMetadata"]["HTTPStatusCode"],
                    404,
                    f"HeadObject of deleted key {key!r}",
                )
            else:
                fail(f"deleted key {key!r} is still readable")
        expect_eq(all_keys(s3, "keys/"), [], "keys listed after deleting them all")

    def aws_cli() -> None:
        executable = find_aws()
        if executable is None:
            case.note("no AWS CLI found (pip install awscli): skipping the CLI checks")
            return
        cli = AwsCli(executable, node, case.tmp / "aws-home")
        work = case.tmp / "cli"
        work.mkdir()
        small = work / "small file.txt"
        small.write_bytes(b"hello from the aws cli\n")
        cli.run("s3", "cp", str(small), f"s3://{BUCKET}/cli/small file.txt")
        expect_eq(
            other.get_object(Bucket=BUCKET, Key="cli/small file.txt")["Body"].read(),
            small.read_bytes(),
            "object uploaded by `aws s3 cp`",
        )
        big = work / "big.bin"
        big_data = pattern_bytes(20 * MIB, 19)
        big.write_bytes(big_data)
        cli.run("s3", "cp", str(big), f"s3://{BUCKET}/cli/big.bin")
        etag = other.head_object(Bucket=BUCKET, Key="cli/big.bin")["ETag"]
        check("-" in etag, f"`aws s3 cp` of 20 MiB should be a multipart upload, ETag {etag}")
        back = work / "big.back"
        cli.run("s3", "cp", f"s3://{BUCKET}/cli/big.bin", str(back))
        check(
            hashlib.md5(back.read_bytes()).digest() == hashlib.md5(big_data).digest(),
            "`aws s3 cp` download is not byte-exact",
        )
        listing = cli.run("s3", "ls", f"s3://{BUCKET}/cli/")
        check(
            "small file.txt" in listing and "big.bin" in listing,
            f"`aws s3 ls` output lacks the objects: {listing!r}",
        )
        buckets = cli.run("s3", "ls")
        check(BUCKET in buckets, f"`aws s3 ls` does not list bucket {BUCKET}: {buckets!r}")

        folder = work / "folder"
        names = []
        for i in range(200):
            name = f"sub{i % 7}/file-{i:03d}.txt"
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(f"file {i}\n".encode() * (i + 1))
            names.append(name)
        cli.run("s3", "sync", str(folder), f"s3://{BUCKET}/synced/")
        expect_eq(
            all_keys(s3, "synced/"),
            sorted(f"synced/{n}" for n in names),
            "keys after `aws s3 sync` of 200 files",
        )
        sample = other.get_object(Bucket=BUCKET, Key="synced/sub3/file-010.txt")["Body"].read()
        expect_eq(sample, b"file 10\n" * 11, "a synced file's bytes")
        again = cli.run("s3", "sync", str(folder), f"s3://{BUCKET}/synced/")
        check("upload:" not in again, f"a second `aws s3 sync` uploaded again: {again[:500]!r}")
        down = work / "down"
        cli.run("s3", "sync", f"s3://{BUCKET}/synced/", str(down))
        for name in names[::37]:
            expect_eq(
                (down / name).read_bytes(),
                (folder / name).read_bytes(),
                f"`aws s3 sync` download of {name}",
            )

        cli.run("s3", "rm", "--recursive", f"s3://{BUCKET}/synced/")
        expect_eq(all_keys(s3, "synced/"), [], "keys after `aws s3 rm --recursive`")
        cli.run("s3", "rm", "--recursive", f"s3://{BUCKET}/cli/")
        expect_eq(all_keys(s3, "cli/"), [], "keys after removing cli/")

    for label, block in (("keys that need encoding", odd_keys), ("AWS CLI", aws_cli)):
        case.step(label)
        case.soft(label, block)


if __name__ == "__main__":
    raise SystemExit(run_case(main))
