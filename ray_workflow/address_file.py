"""The address file (``~/.ray_address``): one Ray cluster a block, read and written by every script.

    # Cluster: isaac-lab-hyperparameter-tuner-1
    # Host: slurm state_dir=/home/me/.cache/isaaclab_ray/slurm
    http://10.21.16.30:8265

A line is a dashboard URL or a bare ``HOST:PORT``; a bare GCS port 6379 means the
dashboard on 8265 of the same host. Comments and blank lines may stand anywhere. The ``# Host:``
comment, which our tools write, says where the cluster runs (``HostRecord``), so that a reader can
ask that host about it (``ray_workflow.hosts.from_record``); Ray's one-liner skips it like any comment.
"""

from __future__ import annotations

import fcntl
import re
import shlex
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ray_workflow.atomic_file import atomic_write_text
from ray_workflow.errors import UserError, setting

DEFAULT_PATH = Path("~/.ray_address").expanduser()
GCS_PORT, DASHBOARD_PORT = 6379, 8265
_CLUSTER_COMMENT = re.compile(r"^#\s*Cluster:\s*(?P<name>\S.*?)\s*$")
_HOST_COMMENT = re.compile(r"^#\s*Host:\s*(?P<record>.*?)\s*$")
_HOST_KIND = re.compile(r"^[a-z][a-z0-9_]*$")
_ADDRESS = re.compile(r"^(?:(?P<scheme>https?)://)?(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):(?P<port>\d{1,5})/?$")


_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)?[^\s/@]+@")


class AddressFileError(UserError, ValueError):
    """A malformed address file; the message names the file and line."""


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
    where it runs, when one of our tools wrote the block (None for a block written by hand)."""

    name: str | None
    dashboard_url: str
    host: HostRecord | None = field(default=None, compare=False)

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
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            if match := _CLUSTER_COMMENT.match(line):
                name, host = match["name"], None
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
        clusters.append(ClusterAddress(name, url, host))
        name, host = None, None
    return clusters


def read(path: Path | str = DEFAULT_PATH) -> list[ClusterAddress]:
    path = Path(path).expanduser()
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise AddressFileError(f"{path}: address file not found") from None
    except IsADirectoryError:
        raise AddressFileError(f"{path}: is a directory, not an address file") from None
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
        blocks.append(f"{header}{cluster.dashboard_url}\n")
    return "".join(blocks)


def write(clusters: list[ClusterAddress], path: Path | str = DEFAULT_PATH) -> Path:
    """Replace the file atomically: readers see the old file or the new one, never half of it."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise AddressFileError(f"{path}: is a directory, not an address file")
    try:
        return atomic_write_text(path, render(clusters))
    except OSError as error:
        raise AddressFileError(f"{path}: cannot write the address file ({error.strerror})") from None


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on a file beside ``path``: a writer reads, changes and replaces it while no other does."""
    lock = path.with_name(f".{path.name}.lock")
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        handle = open(lock, "a")  # held for the block below
    except OSError as error:
        raise AddressFileError(f"{path}: cannot lock the address file ({error.strerror})") from None
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def update(clusters: list[ClusterAddress], path: Path | str = DEFAULT_PATH, remove: Iterable[str] = ()) -> Path:
    """Put ``clusters`` in the file (a block of the same name, or the same address if unnamed, is replaced where it
    stands; new ones go last) and drop the blocks named in ``remove``; every other block stays. Writers at the same
    time take turns, so none loses another's blocks; a file that cannot be parsed is left as it is."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise AddressFileError(f"{path}: is a directory, not an address file")
    with _locked(path):
        existing = read(path) if path.exists() else []
        dropped = set(remove)
        pending = list(clusters)

        def replacement(old: ClusterAddress) -> ClusterAddress | None:
            for new in pending:
                if (new.name is not None and new.name == old.name) or (
                    new.name is None and new.dashboard_url == old.dashboard_url
                ):
                    pending.remove(new)
                    return new
            return None

        merged = []
        for old in existing:
            if old.name is not None and old.name in dropped:
                continue
            merged.append(replacement(old) or old)
        return write([*merged, *pending], path)


def drop(names: Iterable[str], path: Path | str = DEFAULT_PATH) -> None:
    """Drop the blocks of the clusters ``names`` (stopped or deleted) from the file, if there is one."""
    names = list(names)
    if names and Path(path).expanduser().exists():
        update([], path, remove=names)
