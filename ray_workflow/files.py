"""Users' files, read and written safely: written so that a reader sees the old content or the new, never half
of it; read only when they are regular files of a sane size (a token file pointed at ``/dev/zero`` or a FIFO must
not eat the machine's memory or hang the command)."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def atomic_write(path: Path, write: Callable[[IO[Any]], object], binary: bool = False) -> Path:
    """Call ``write`` on a temporary file beside ``path``, then rename it over ``path``.

    A file that exists keeps its permissions (a 0600 address file stays private); a new one
    gets what ``open`` would give it under the user's umask. A symlink stays a symlink: the file it
    points to is the one replaced.
    """
    path = Path(os.path.realpath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"newline": ""})) as handle:
            write(handle)
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda handle: handle.write(text))


class NotAFile(ValueError):
    """A path that must be a regular file of a bounded size and is not; the message says what it is."""


def read_text(path: Path, max_bytes: int) -> str:
    """The text of the regular file ``path``, at most ``max_bytes``; ``FileNotFoundError`` if there is none.

    Opened without blocking, so a FIFO is refused instead of waited on; a folder, a device or a file that is too
    big is refused before anything is read into memory.
    """
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise NotAFile(f"is {_kind(status.st_mode)}")
        if status.st_size > max_bytes:
            raise NotAFile(f"is {status.st_size} bytes, too big (at most {max_bytes})")
        with os.fdopen(descriptor, "rb") as handle:
            descriptor = -1
            data = handle.read(max_bytes + 1)
    finally:
        if descriptor >= 0:
            os.close(descriptor)
    if len(data) > max_bytes:
        raise NotAFile(f"holds more than {max_bytes} bytes, too big")
    return data.decode()


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a socket or other special file"


def why_not_writable(folder: Path) -> str | None:
    """Why this user could not create files in ``folder`` (making it first if it does not exist); None if it can."""
    folder = Path(folder).expanduser().absolute()
    existing = next(parent for parent in [folder, *folder.parents] if parent.exists())
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"no permission to write in {existing}"
    return None
