"""The address file (``~/.ray_address``): one Ray cluster a block, read and written by every script.

    # Cluster: isaac-lab-hyperparameter-tuner-1
    # Host: slurm state_dir=/home/me/.cache/isaaclab_ray/slurm
    # GCS: 10.21.16.30:20000
    http://10.21.16.30:20001

A line is a dashboard URL or a bare ``HOST:PORT``; a bare GCS port 6379 means the
dashboard on 8265 of the same host. Comments and blank lines may stand anywhere. Our tools write
two more comments, which Ray's one-liner skips like any other: ``# Host:`` says where the cluster
runs (``HostRecord``), so that a reader can ask that host about it (``ray_workflow.hosts.from_record``),
and ``# GCS:`` the address ``ray status --address`` takes.
"""

from __future__ import annotations

import fcntl
import os
import re
import shlex
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ray_workflow import files
from ray_workflow.errors import UserError, WorldError, setting
from ray_workflow.files import atomic_write_text

DEFAULT_PATH = Path("~/.ray_address").expanduser()
MAX_BYTES = 1 << 20  # a few lines a cluster: a megabyte is thousands of clusters
LOCK_TIMEOUT_S = 30.0  # writers hold the lock for milliseconds; longer means a command is stuck holding it
GCS_PORT, DASHBOARD_PORT = 6379, 8265
_CLUSTER_COMMENT = re.compile(r"^#\s*Cluster:\s*(?P<name>\S.*?)\s*$")
_HOST_COMMENT = re.compile(r"^#\s*Host:\s*(?P<record>.*?)\s*$")
_GCS_COMMENT = re.compile(r"^#\s*GCS:\s*(?P<address>\S+)\s*$")
_HOST_KIND = re.compile(r"^[a-z][a-z0-9_]*$")
_ADDRESS = re.compile(r"^(?:(?P<scheme>https?)://)?(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):(?P<port>\d{1,5})/?$")


_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)?[^\s/@]+@")


class AddressFileError(UserError, ValueError):
    """A malformed address file; the message names the file and line."""


class AddressFileBusy(WorldError, RuntimeError):
    """Another command holds the address file's lock for too long; the message names it."""


def redact(text: str) -> str:
    """``http://user:secret@host`` as ``http://***@host``: credentials are never printed."""
    return _CREDENTIALS.sub(lambda match: f"{match['scheme'] or ''}***@", text)


@dataclass(frozen=True)
class HostRecord:
    """Where a cluster runs: the kind of host (``kuberay``, ``slurm``, ``local``) and what finds it there
    (a namespace and kubectl context, a state folder), as the ``# Host:`` line of its block says."""

    kind: str
    where: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not _HOST_KIND.match(self.kind):
            raise AddressFileError(f"host kind {self.kind!r} is not a word of lower-case letters")
        for key, value in self.where:
            if not _HOST_KIND.match(key) or any(not c.isprintable() for c in value):
                raise AddressFileError(f"host {self.kind}: {key}={value!r} cannot be written to an address file")

    @classmethod
    def of(cls, kind: str, **where: str | None) -> HostRecord:
        return cls(kind, tuple((key, value) for key, value in where.items() if value is not None))

    def get(self, key: str) -> str | None:
        return dict(self.where).get(key)

    def line(self) -> str:
        return shlex.join([self.kind, *(f"{key}={value}" for key, value in self.where)])

    @classmethod
    def parse(cls, text: str) -> HostRecord:
        words = shlex.split(text)
        if not words or any("=" not in word for word in words[1:]):
            raise ValueError("expected '# Host: KIND key=value ...'")
        return cls(words[0], tuple(tuple(word.split("=", 1)) for word in words[1:]))


@dataclass(frozen=True)
class ClusterAddress:
    """One cluster of the address file; a name is one line of text, as the file's format needs. ``host`` says
    where it runs and ``gcs_address`` where Ray's GCS answers, when one of our tools wrote the block."""

    name: str | None
    dashboard_url: str
    host: HostRecord | None = field(default=None, compare=False)
    gcs_address: str | None = field(default=None, compare=False)  # HOST:PORT, what `ray status --address` takes

    def __post_init__(self) -> None:
        if self.name is not None and (not self.name.strip() or any(not c.isprintable() for c in self.name)):
            raise AddressFileError(f"cluster name {self.name!r} cannot be written to an address file")


def dashboard_url(text: str) -> str | None:
    """``http://h:8265``, ``h:8265`` or ``h:6379`` as a dashboard URL; None if it is not an address."""
    match = _ADDRESS.match(text.strip())
    if match is None or not 0 < int(match["port"]) < 65536:
        return None
    port = int(match["port"])
    if match["scheme"] is None and port == GCS_PORT:
        port = DASHBOARD_PORT
    return f"{match['scheme'] or 'http'}://{match['host']}:{port}"


def typed(addresses: list[str], names: list[str]) -> list[ClusterAddress]:
    """Addresses the user typed (``--address``: dashboard URLs or HOST:PORT), named in order (``--cluster_name``)."""
    if names and len(names) != len(addresses):
        raise AddressFileError(
            f"{len(names)} {setting('cluster_name')} for {len(addresses)} {setting('address')}; give one per address"
        )
    clusters = []
    for index, text in enumerate(addresses):
        url = dashboard_url(text)
        if url is None:
            raise AddressFileError(
                f"{setting('address')} {redact(text)!r} is not a Ray address (expected http://HOST:PORT or HOST:PORT)"
            )
        clusters.append(ClusterAddress(names[index] if names else None, url))
    return clusters


def parse(text: str, source: str = "<address file>") -> list[ClusterAddress]:
    clusters: list[ClusterAddress] = []
    name: str | None = None
    host: HostRecord | None = None
    gcs: str | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            if match := _CLUSTER_COMMENT.match(line):
                name, host, gcs = match["name"], None, None
            elif match := _GCS_COMMENT.match(line):
                gcs = match["address"]
            elif match := _HOST_COMMENT.match(line):
                try:
                    host = HostRecord.parse(match["record"])
                except (ValueError, AddressFileError) as error:
                    raise AddressFileError(f"{source}:{number}: {line!r}: {error}") from None
            continue
        url = dashboard_url(line)
        if url is None:
            raise AddressFileError(
                f"{source}:{number}: {redact(line)!r} is not a Ray address (expected http://HOST:PORT or HOST:PORT)"
            )
        clusters.append(ClusterAddress(name, url, host, gcs))
        name, host, gcs = None, None, None
    return clusters


def read(path: Path | str = DEFAULT_PATH) -> list[ClusterAddress]:
    path = Path(path).expanduser()
    try:
        text = files.read_text(path, MAX_BYTES)
    except FileNotFoundError:
        raise AddressFileError(f"{path}: address file not found") from None
    except files.NotAFile as error:
        raise AddressFileError(f"{path}: {error}, not an address file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise AddressFileError(f"{path}: cannot read the address file ({error})") from None
    return parse(text, str(path))


def render(clusters: list[ClusterAddress]) -> str:
    blocks = []
    for cluster in clusters:
        if dashboard_url(cluster.dashboard_url) is None:
            raise AddressFileError(f"{redact(cluster.dashboard_url)!r} is not a Ray dashboard address")
        header = f"# Cluster: {cluster.name}\n" if cluster.name else ""
        header += f"# Host: {cluster.host.line()}\n" if cluster.host else ""
        header += f"# GCS: {cluster.gcs_address}\n" if cluster.gcs_address else ""
        blocks.append(f"{header}{cluster.dashboard_url}\n")
    return "".join(blocks)


def write(clusters: list[ClusterAddress], path: Path | str = DEFAULT_PATH) -> Path:
    """Replace the file atomically: readers see the old file or the new one, never half of it."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise AddressFileError(f"{path}: is a folder, not an address file")
    try:
        return atomic_write_text(path, render(clusters))
    except OSError as error:
        raise AddressFileError(f"{path}: cannot write the address file ({error.strerror})") from None


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on a file beside ``path``: a writer reads, changes and replaces it while no other does.
    A lock held for ``LOCK_TIMEOUT_S`` is an error naming the process that holds it."""
    timeout_s = LOCK_TIMEOUT_S
    lock = path.with_name(f".{path.name}.lock")
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        handle = open(lock, "a")  # held for the block below
    except OSError as error:
        raise AddressFileError(f"{path}: cannot lock the address file ({error.strerror}: {lock})") from None
    with handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise AddressFileBusy(
                        f"{path}: another command has held its lock {lock} for {timeout_s:g} s{_holder(lock)}"
                    ) from None
                time.sleep(0.1)
        yield


def _holder(lock: Path) -> str:
    """`` (process 123: python local_clusters.py up)``, the process holding a flock on ``lock``, as /proc/locks
    says; empty where it cannot be told."""
    try:
        inode = os.stat(lock).st_ino
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()
            if len(fields) > 5 and fields[1] == "FLOCK" and fields[5].endswith(f":{inode}"):
                pid = int(fields[4])
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                return f" (process {pid}: {command.strip()[:200]})"
    except (OSError, ValueError):
        pass
    return ""


def check_writable(path: Path | str = DEFAULT_PATH) -> None:
    """Refuse, before anything starts, an address file that could not be written once the clusters are ready: a
    folder, or one in a folder this user may not create files in."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise AddressFileError(f"{path}: is a folder, not an address file")
    if why := files.why_not_writable(path.parent):
        raise AddressFileError(f"{path}: cannot write the address file ({why})")
    lock = path.with_name(f".{path.name}.lock")
    if lock.is_dir():
        raise AddressFileError(f"{path}: cannot lock the address file ({lock} is a folder)")


def _same_cluster(old: ClusterAddress, new: ClusterAddress) -> bool:
    """Whether ``new`` is the cluster of block ``old``: the same name (and host, where both blocks say where they
    run: two namespaces may each hold a cluster of that name), or the same address for unnamed blocks."""
    if new.name is None or old.name is None:
        return new.name is None and old.name is None and new.dashboard_url == old.dashboard_url
    return new.name == old.name and (old.host is None or new.host is None or old.host == new.host)


def update(
    clusters: list[ClusterAddress],
    path: Path | str = DEFAULT_PATH,
    remove: Callable[[ClusterAddress], bool] = lambda block: False,
) -> Path:
    """Put ``clusters`` in the file (a block of the same cluster is replaced where it stands; new ones go last) and
    drop the blocks ``remove`` picks; every other block stays. Writers at the same time take turns, so none loses
    another's blocks; a file that cannot be parsed is left as it is."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise AddressFileError(f"{path}: is a folder, not an address file")
    with _locked(path):
        existing = read(path) if path.exists() else []
        pending = list(clusters)

        def replacement(old: ClusterAddress) -> ClusterAddress | None:
            for new in pending:
                if _same_cluster(old, new):
                    pending.remove(new)
                    return new
            return None

        merged = [replacement(old) or old for old in existing if not remove(old)]
        return write([*merged, *pending], path)


def drop(names: Iterable[str], path: Path | str = DEFAULT_PATH, host: HostRecord | None = None) -> None:
    """Drop the blocks of the clusters ``names`` (ended) from the file, if there is one: those ``host`` runs, or
    that say nothing of where they run."""
    names = set(names)
    if names and Path(path).expanduser().exists():
        update(
            [], path, lambda block: block.name in names and (block.host is None or host is None or block.host == host)
        )
