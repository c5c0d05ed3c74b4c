"""A real S3 API server on localhost: moto's server mode (`python -m moto.server`) in its own
process on a free port, started once per test session like the broker (tests/conftest.py `s3`).

Each test takes its own bucket (`S3Server.bucket()`), and talks to it over HTTP through the
same storage options production uses (`storage_options`): delta-rs' object store for the
table, pyarrow's S3 filesystem for the records beside it, boto3 to list and read the objects.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.ports import free_port
from tests.support.wait import eventually

REGION = "us-east-1"
KEY_ID = "testing"
SECRET = "testing"


class S3Server:
    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION, aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET)

    def bucket(self) -> str:
        """A new, empty bucket of the test's own."""
        name = f"b-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name

    def storage_options(self) -> dict[str, str]:
        """What the sink gets from CONSENTRY_STORE_OPTIONS / AWS_* in production, pointing here."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "conditional_put": "etag",
        }

    def objects(self, bucket: str, prefix: str = "") -> dict[str, bytes]:
        """Every object under `prefix`: key -> bytes."""
        client = self.client()
        found: dict[str, bytes] = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                found[item["Key"]] = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        return found


def _health(endpoint: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


@contextmanager
def s3_server(log_path: Path | None = None) -> Iterator[S3Server]:
    """moto's S3 server on 127.0.0.1:<free port>, stopped (and waited for) at exit."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab") if log_path is not None else subprocess.DEVNULL  # noqa: SIM115
    # No credentials of the machine's may leak into the server or be needed by it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log, env=env)
    try:
        eventually(lambda: process.poll() is None and _health(endpoint), timeout=60, what=f"moto S3 server on {endpoint}")
        yield S3Server(endpoint)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if log is not subprocess.DEVNULL:
            log.close()
