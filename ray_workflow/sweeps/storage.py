"""Where a sweep keeps its results: a folder, or a bucket (``gs://``, ``s3://``) that every node writes to.

Ray Tune writes a sweep's state, its trials' checkpoints and their files through a pyarrow filesystem, from the
driver and from each node: with a bucket, no node needs a disk another can see (since Ray 2.7 a sweep of several
nodes needs a bucket or a shared filesystem). Which endpoint a bucket is at comes from the variables the cloud SDKs
already read, so that an emulator or another cloud's S3 needs no flag of ours:

| URI | endpoint | credentials |
|---|---|---|
| ``gs://bucket/prefix`` | ``STORAGE_EMULATOR_HOST`` (an emulator, anonymous), else Google's | Google's defaults |
| ``s3://bucket/prefix`` | ``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL``, else AWS's | AWS's credential chain |

Two sweeps of one name in one place never share a folder: the first to claim it (``os.mkdir`` locally, the store's
conditional write in a bucket) goes on, the other is refused. The claim names the sweep's identity (what the command
asks for), so that the same command run again continues the sweep there, and one driver at a time runs it: a lease
that the driver renews while it runs, which a driver lost with its head stops renewing.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import psutil
import pyarrow.fs

from ray_workflow.errors import UserError, WorkflowError, WorldError, setting
from ray_workflow.files import atomic_write_text

logger = logging.getLogger(__name__)

CLAIM = ".isaaclab_ray_sweep.json"  # makes an experiment folder one sweep's: which, who started it, when
LEASE = ".isaaclab_ray_driver.json"  # the driver running the sweep now, and when it was last heard from
HEARTBEAT_S = 5.0  # how often a running driver renews its lease
LEASE_S = 30.0  # a lease not renewed for this long belongs to a driver that has died (with its head, say)
MAX_CONTROL_BYTES = 64 * 1024  # a claim or a lease is a few hundred bytes; a bigger one is not ours
RETRY_S = 15  # how long a store that does not answer is tried before the sweep is refused


class StorageError(UserError, ValueError):
    """A --storage_path that cannot hold a sweep: not a folder or bucket URI, a missing bucket, one we may not write."""


class StorageUnreachable(WorldError, RuntimeError):
    """The store did not answer; nothing was written."""


@dataclass(frozen=True)
class Storage:
    """A sweep's storage: ``uri`` as the user knows it (an absolute folder, ``gs://bucket/prefix``), and the
    ``filesystem`` and ``path`` Ray Tune writes through (no filesystem: a local folder)."""

    uri: str
    path: str
    filesystem: pyarrow.fs.FileSystem | None = None

    @property
    def in_bucket(self) -> bool:
        return self.filesystem is not None

    def experiment(self, name: str) -> str:
        """The experiment's folder, as Tune takes it with ``filesystem``."""
        return f"{self.path.rstrip('/')}/{name}"

    def shown(self, name: str) -> str:
        """The experiment's folder, as the user knows it."""
        return f"{self.uri.rstrip('/')}/{name}"


def open_storage(storage_path: str) -> Storage:
    """The storage ``storage_path`` names: a folder (made if need be) or a bucket, its endpoint from the SDKs'
    variables (see the module's docstring)."""
    flag = setting("storage_path")
    if "://" not in storage_path:
        path = Path(storage_path).expanduser().resolve()
        if path.exists() and not path.is_dir():
            raise StorageError(f"{flag} {storage_path}: is a file, not a folder")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StorageError(f"{flag} {storage_path}: cannot create it ({error.strerror})") from None
        return Storage(str(path), str(path))
    parsed = urlparse(storage_path)
    if parsed.scheme not in ("gs", "s3") or not parsed.netloc:
        raise StorageError(f"{flag} {storage_path}: give a folder, gs://BUCKET/PREFIX or s3://BUCKET/PREFIX")
    path = f"{parsed.netloc}{parsed.path}".rstrip("/")
    return Storage(storage_path.rstrip("/"), path, _gcs() if parsed.scheme == "gs" else _s3())


def _endpoint(*variables: str) -> tuple[str, str] | None:
    """``(scheme, host:port)`` from the first of ``variables`` that is set."""
    for variable in variables:
        if value := os.environ.get(variable):
            parsed = urlparse(value if "://" in value else f"http://{value}")
            return parsed.scheme, parsed.netloc
    return None


def _gcs() -> pyarrow.fs.FileSystem:
    retry = datetime.timedelta(seconds=RETRY_S)
    if emulator := _endpoint("STORAGE_EMULATOR_HOST"):
        return pyarrow.fs.GcsFileSystem(
            anonymous=True, scheme=emulator[0], endpoint_override=emulator[1], retry_time_limit=retry
        )
    return pyarrow.fs.GcsFileSystem(retry_time_limit=retry)


def _s3() -> pyarrow.fs.FileSystem:
    options = {"connect_timeout": RETRY_S, "request_timeout": RETRY_S}
    if endpoint := _endpoint("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        options.update(scheme=endpoint[0], endpoint_override=endpoint[1])
    return pyarrow.fs.S3FileSystem(**options)


def check_writable(storage: Storage) -> None:
    """Write and remove a small object where the sweep will write, before anything else: a missing bucket, one this
    user may not write, wrong credentials or a store that does not answer are one line, and nothing is left."""
    if not storage.in_bucket:
        if not os.access(storage.path, os.W_OK | os.X_OK):
            raise StorageError(f"{setting('storage_path')} {storage.uri}: cannot write there (permission denied)")
        return
    probe = f"{storage.path}/.isaaclab_ray_probe_{secrets.token_hex(8)}"
    try:
        with storage.filesystem.open_output_stream(probe) as stream:
            stream.write(b"probe")
        storage.filesystem.delete_file(probe)
    except OSError as error:
        raise _refused(storage, error) from None


# What the stores' errors say, by the code pyarrow's clients give (S3: "AWS Error CODE", GCS: "Status(CODE: ...").
_UNREACHABLE = {"NETWORK_CONNECTION", "UNAVAILABLE", "DEADLINE_EXCEEDED", "SERVICE_UNAVAILABLE"}
_REASONS = {
    "NOT_FOUND": "the bucket does not exist",
    "NO_SUCH_BUCKET": "the bucket does not exist",
    "ACCESS_DENIED": "these credentials may not write there",
    "PERMISSION_DENIED": "these credentials may not write there",
    "FORBIDDEN": "these credentials may not write there",
    "INVALID_ACCESS_KEY_ID": "the store does not know these credentials",
    "SIGNATURE_DOES_NOT_MATCH": "the store does not accept these credentials",
    "UNAUTHENTICATED": "the store does not accept these credentials",
}


def _refused(storage: Storage, error: OSError) -> WorkflowError:
    """One line for a store's refusal: what it means, with the store's own code and words, without pyarrow's
    wrapping (request ids, retry metadata)."""
    said = " ".join(str(error).split())
    where = f"{setting('storage_path')} {storage.uri}"
    code = re.search(r"AWS Error (\w+)|Status\((\w+):|\b(NoSuchBucket|AccessDenied|InvalidAccessKeyId)\b", said)
    code_name = next((group for group in code.groups() if group), "") if code else ""
    code_name = re.sub(r"(?<=[a-z])(?=[A-Z])", "_", code_name).upper()
    words = re.search(r"operation: (.*?)(?: \(Request ID|$)|last message of (.*?) error_info", said)
    detail = next((group for group in words.groups() if group), said) if words else said
    detail = f"{code_name}: {detail}" if code_name and code_name not in detail else detail
    unanswered = any(text in said for text in ("Could not connect", "Couldn't connect", "timed out"))
    if code_name in _UNREACHABLE or unanswered:
        return StorageUnreachable(f"{where}: the store does not answer ({detail[:300]})")
    return StorageError(f"{where}: {_REASONS.get(code_name, 'cannot write there')} ({detail[:300]})")


def claim(storage: Storage, name: str, identity: str, about: dict[str, str]) -> bool:
    """Make the experiment's folder this sweep's, or find that an earlier run of the same sweep (``identity``) holds
    it: True if so (the sweep continues there), False if newly claimed. Another sweep's folder is refused.

    ``os.mkdir`` of the folder, or in a bucket the store's own conditional write of its claim object, so that of two
    sweeps claiming one name at once exactly one gets it. ``about`` says who claimed it, for whoever is refused."""
    text = json.dumps({"identity": identity, **about, "host": socket.gethostname(), "claimed_at": time.time()})
    if not storage.in_bucket:
        try:
            os.mkdir(storage.experiment(name))
            atomic_write_text(Path(storage.experiment(name), CLAIM), text)
            return False
        except FileExistsError:
            pass
    elif _create(storage, f"{name}/{CLAIM}", text):
        return False
    try:
        found = json.loads(_read(storage, f"{name}/{CLAIM}") or "{}")
    except ValueError:
        found = {}
    if isinstance(found, dict) and found.get("identity") == identity:
        return True
    raise StorageError(
        f"{setting('name')} {name}: {storage.shown(name)} already holds another sweep; choose another "
        f"{setting('name')}, or {setting('resume')} to continue it"
    )


@contextlib.contextmanager
def driving(storage: Storage, name: str) -> Iterator[None]:
    """Hold the experiment while this driver runs it: a lease object the driver rewrites every ``HEARTBEAT_S``
    and deletes when it ends. A second driver of the same sweep (the same command submitted twice) waits while
    the lease is kept and is refused as soon as its heartbeat moves; a lease not renewed for ``LEASE_S`` (its
    driver died with its head) is taken over. The lease is created with the store's conditional write, so of two
    drivers that find a dead one's lease at once, one goes on."""
    key = f"{name}/{LEASE}"
    mine = {"driver": secrets.token_hex(8), "host": socket.gethostname(), "pid": os.getpid(), "pids": _pid_namespace()}
    seen, since = None, time.monotonic()
    while not _create(storage, key, json.dumps({**mine, "heartbeat": time.time()})):
        lease = _lease(storage, key)
        if lease is None:  # ended meanwhile
            continue
        if seen is not None and lease != seen:
            raise SweepRunning(
                f"{storage.shown(name)} is being run now by another driver (pid {lease.get('pid')} on "
                f"{lease.get('host')}); give {setting('name')} to start another sweep"
            )
        # Unchanged over more than a heartbeat, and silent for a lease's length by its own clock or ours.
        waited_s = time.monotonic() - since
        heartbeat = lease.get("heartbeat")
        silent_s = max(waited_s, time.time() - (heartbeat if isinstance(heartbeat, int | float) else 0.0))
        if _ended_here(lease) or (seen is not None and waited_s > 1.5 * HEARTBEAT_S and silent_s > LEASE_S):
            logger.warning(
                "%s: its last driver (pid %s on %s) has ended or not been heard from for %.0f s; taking over",
                storage.shown(name), lease.get("pid"), lease.get("host"), silent_s,
            )  # fmt: skip
            _delete(storage, key)
            continue
        if seen is None:
            logger.info("%s: another driver held it %.0f s ago; waiting until it is known to be gone",
                        storage.shown(name), silent_s)  # fmt: skip
            seen, since = lease, time.monotonic()
        time.sleep(HEARTBEAT_S / 2)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):
                _write(storage, key, json.dumps({**mine, "heartbeat": time.time()}))

    heart = threading.Thread(target=beat, name="sweep-lease", daemon=True)
    heart.start()
    try:
        yield
    finally:
        stop.set()
        heart.join()
        with contextlib.suppress(OSError):
            if (_lease(storage, key) or {}).get("driver") == mine["driver"]:
                _delete(storage, key)


def _pid_namespace() -> str:
    """This process's PID namespace (its inode), so that a pid is only compared within the one it belongs to."""
    try:
        return f"{socket.gethostname()}:{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return ""


def _ended_here(lease: dict) -> bool:
    """Whether the lease's driver ran in this machine's PID namespace and has ended: then it need not be waited
    for (its head was killed, or it was, and it is started again here)."""
    pid = lease.get("pid")
    if not _pid_namespace() or lease.get("pids") != _pid_namespace() or not isinstance(pid, int) or pid < 1:
        return False
    return not psutil.pid_exists(pid)


class SweepRunning(UserError, RuntimeError):
    """The sweep is being run by another driver right now."""


def _lease(storage: Storage, key: str) -> dict | None:
    try:
        lease = json.loads(_read(storage, key) or "null")
    except ValueError:
        return {}
    return lease if isinstance(lease, dict) or lease is None else {}


def _filesystem(storage: Storage) -> pyarrow.fs.FileSystem:
    return storage.filesystem or pyarrow.fs.LocalFileSystem()


def _read(storage: Storage, key: str) -> str | None:
    """The object (or file) ``key`` under the storage, or None if there is none."""
    path = f"{storage.path.rstrip('/')}/{key}"
    try:
        if _filesystem(storage).get_file_info(path).type != pyarrow.fs.FileType.File:
            return None
        with _filesystem(storage).open_input_stream(path) as stream:
            return stream.read(MAX_CONTROL_BYTES).decode(errors="replace")
    except FileNotFoundError:
        return None
    except OSError as error:
        raise _refused(storage, error) from None


def _write(storage: Storage, key: str, text: str) -> None:
    path = f"{storage.path.rstrip('/')}/{key}"
    if not storage.in_bucket:
        atomic_write_text(Path(path), text)
        return
    with storage.filesystem.open_output_stream(path) as stream:
        stream.write(text.encode())


def _delete(storage: Storage, key: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        _filesystem(storage).delete_file(f"{storage.path.rstrip('/')}/{key}")


def _create(storage: Storage, key: str, text: str) -> bool:
    """Create ``key`` with ``text`` unless it exists: True if this call created it. Atomic in every store."""
    if not storage.in_bucket:
        try:
            descriptor = os.open(f"{storage.path.rstrip('/')}/{key}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(descriptor, "w") as handle:
            handle.write(text)
        return True
    parsed = urlparse(storage.uri)
    full_key = f"{parsed.path.strip('/')}/{key}".lstrip("/")
    try:
        return (_create_gcs if parsed.scheme == "gs" else _create_s3)(parsed.netloc, full_key, text)
    except OSError as error:
        raise _refused(storage, error) from None


def _create_gcs(bucket: str, key: str, text: str) -> bool:
    from google.api_core import exceptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    emulated = "STORAGE_EMULATOR_HOST" in os.environ
    client = storage.Client(project="emulated", credentials=AnonymousCredentials()) if emulated else storage.Client()
    try:
        client.bucket(bucket).blob(key).upload_from_string(text, if_generation_match=0, timeout=RETRY_S)
    except exceptions.PreconditionFailed:
        return False
    except exceptions.GoogleAPICallError as error:
        raise OSError(str(error)) from None
    return True


def _create_s3(bucket: str, key: str, text: str) -> bool:
    import boto3
    import botocore.exceptions

    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    client = boto3.client("s3", endpoint_url=endpoint)
    try:
        client.put_object(Bucket=bucket, Key=key, Body=text.encode(), IfNoneMatch="*")
    except botocore.exceptions.ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
            return False
        raise OSError(str(error)) from None
    except botocore.exceptions.BotoCoreError as error:
        raise OSError(str(error)) from None
    return True
