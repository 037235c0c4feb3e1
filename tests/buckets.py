"""Object stores for the tests, as plain processes on free ports: fake-gcs-server for GCS (built by
``make emulators``) and moto's server for S3 (the dev extra). ``environment`` points every client at them the way
the cloud SDKs are pointed at emulators (STORAGE_EMULATOR_HOST, AWS_ENDPOINT_URL); the tests read what is in a
bucket through its own API, never through our code."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from daemons import Daemons, free_port

from ray_workflow import PROJECT_ROOT

BUILD_SCRIPT = PROJECT_ROOT / "emulators" / "build.sh"
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def fake_gcs_server() -> Path | None:
    """The binary ``make emulators`` built, or None if it has not been built."""
    folder = subprocess.run([str(BUILD_SCRIPT), "--where"], capture_output=True, text=True, check=True).stdout.strip()
    binary = Path(folder) / "fake-gcs-server"
    return binary if binary.is_file() else None


def missing() -> str | None:
    if fake_gcs_server() is None:
        return "the GCS emulator is not built: run `make emulators` (needs Go 1.26 and the Go module proxy)"
    if shutil.which("moto_server", path=str(Path(sys.executable).parent)) is None:
        return "moto's server is not installed: run `make` (the dev extra holds moto[server])"
    return None


GUARDED_BUCKET = "guarded"  # on the S3 that checks credentials: readable, and writable by no key we hold
_SETUP_ACTIONS = 4  # the guarded S3's requests before it checks credentials: the setup in ``_guard``, exactly


class BucketsForTests:
    """A GCS and an S3 emulator; ``environment`` is what a user's shell would export to use them. A second S3
    checks credentials as AWS does (moto's IAM): its ``GUARDED_BUCKET`` may be read, not written, with
    ``reader_keys``, and keys it never issued are refused."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="pytest_buckets_"))
        self.daemons = Daemons(self.root)
        self.gcs = self.s3 = self.guarded_s3 = ""
        self.environment: dict[str, str] = {}
        self.reader_keys: dict[str, str] = {}

    def start(self) -> None:
        gcs_port, s3_port, guarded_port = free_port(), free_port(), free_port()
        self.gcs, self.s3 = f"http://127.0.0.1:{gcs_port}", f"http://127.0.0.1:{s3_port}"
        self.guarded_s3 = f"http://127.0.0.1:{guarded_port}"
        self.daemons.spawn("fake-gcs-server", [str(fake_gcs_server()), "-scheme", "http", "-host", "127.0.0.1",
                                               "-port", str(gcs_port), "-backend", "memory", "-external-url", self.gcs,
                                               "-log-level", "warn"])  # fmt: skip
        moto = str(Path(sys.executable).parent / "moto_server")
        self.daemons.spawn("moto", [moto, "-H", "127.0.0.1", "-p", str(s3_port)])
        self.daemons.spawn("moto-guarded", [moto, "-H", "127.0.0.1", "-p", str(guarded_port)],
                           env={"INITIAL_NO_AUTH_ACTION_COUNT": str(_SETUP_ACTIONS)})  # fmt: skip
        self.daemons.wait("fake-gcs-server", lambda: self._answers(f"{self.gcs}/storage/v1/b?project=test"))
        self.daemons.wait("moto", lambda: self._answers(f"{self.s3}/moto-api/"))
        self.daemons.wait("moto-guarded", lambda: self._answers(f"{self.guarded_s3}/moto-api/"))
        self.environment = {"STORAGE_EMULATOR_HOST": self.gcs, "AWS_ENDPOINT_URL": self.s3, **S3_CREDENTIALS}
        self._guard()

    def _guard(self) -> None:
        """The guarded S3's bucket and a key that may only read it: exactly ``_SETUP_ACTIONS`` requests."""
        import boto3

        keys = {
            "aws_access_key_id": S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        }
        options = {"endpoint_url": self.guarded_s3, "region_name": S3_CREDENTIALS["AWS_DEFAULT_REGION"], **keys}
        boto3.client("s3", **options).create_bucket(Bucket=GUARDED_BUCKET)
        iam = boto3.client("iam", **options)
        iam.create_user(UserName="reader")
        key = iam.create_access_key(UserName="reader")["AccessKey"]
        read_only = {"Effect": "Allow", "Action": ["s3:Get*", "s3:List*"], "Resource": "*"}
        iam.put_user_policy(UserName="reader", PolicyName="read-only",
                            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [read_only]}))  # fmt: skip
        self.reader_keys = {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}

    @staticmethod
    def _answers(url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return True
        except (urllib.error.URLError, OSError):
            return False

    def _s3_client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.s3,
            aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=S3_CREDENTIALS["AWS_DEFAULT_REGION"],
        )

    def filesystem(self, scheme: str):
        """A pyarrow filesystem on the ``gs`` or ``s3`` emulator, made here as Ray Tune's users make theirs."""
        import pyarrow.fs

        if scheme == "gs":
            return pyarrow.fs.GcsFileSystem(anonymous=True, scheme="http", endpoint_override=self.gcs.split("://")[1])
        return pyarrow.fs.S3FileSystem(
            access_key=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"], secret_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region=S3_CREDENTIALS["AWS_DEFAULT_REGION"], scheme="http", endpoint_override=self.s3.split("://")[1],
        )  # fmt: skip

    def create_bucket(self, scheme: str, name: str) -> str:
        """A new bucket ``name`` on the ``gs`` or ``s3`` emulator; its URI."""
        if scheme == "gs":
            request = urllib.request.Request(
                f"{self.gcs}/storage/v1/b?project=test", data=json.dumps({"name": name}).encode(), method="POST",
                headers={"Content-Type": "application/json"},
            )  # fmt: skip
            urllib.request.urlopen(request, timeout=10).close()
        else:
            self._s3_client().create_bucket(Bucket=name)
        return f"{scheme}://{name}"

    def objects(self, uri: str) -> list[str]:
        """Every object under ``uri`` (``gs://bucket/prefix``), as the store's own listing names them, with the
        prefix taken off."""
        parsed = urllib.parse.urlparse(uri)
        bucket, prefix = parsed.netloc, f"{parsed.path.strip('/')}/".lstrip("/")
        names: list[str] = []
        if parsed.scheme == "gs":
            token = ""
            while True:
                query = urllib.parse.urlencode({"prefix": prefix, **({"pageToken": token} if token else {})})
                with urllib.request.urlopen(f"{self.gcs}/storage/v1/b/{bucket}/o?{query}", timeout=10) as response:
                    page = json.load(response)
                names += [item["name"] for item in page.get("items", [])]
                if not (token := page.get("nextPageToken")):
                    break
        else:
            for page in self._s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                names += [item["Key"] for item in page.get("Contents", [])]
        return sorted(name.removeprefix(prefix) for name in names)

    def read(self, uri: str) -> bytes:
        """One object's content, through the store's own API."""
        parsed = urllib.parse.urlparse(uri)
        if parsed.scheme == "gs":
            name = urllib.parse.quote(parsed.path.lstrip("/"), safe="")
            with urllib.request.urlopen(f"{self.gcs}/storage/v1/b/{parsed.netloc}/o/{name}?alt=media", timeout=10) as r:
                return r.read()
        return self._s3_client().get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))["Body"].read()

    def stop(self) -> None:
        self.daemons.stop()
        shutil.rmtree(self.root, ignore_errors=True)
