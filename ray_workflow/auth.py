"""Ray's token authentication, the one place where our tools set ``RAY_AUTH_MODE`` and find tokens.

Ray's model is one token per user, kept where Ray's own CLI and SDK look for it
(``RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token``) and given to every cluster the user
starts; with ``RAY_AUTH_MODE=token`` exported, ``ray job submit``, ``ray status`` and the rest
send it. Our tools make that token (mode 0600) the first time a cluster needs it, and give it to
local clusters, SLURM jobs (through their state dir, never a command line) and KubeRay clusters (a
Secret). A cluster with a token of its own (``--cluster_token``), or one someone else started
whose token the grok script found, has its token kept per address in files only the user can read
(``~/.cache/isaaclab_ray/tokens``, or ``$ISAACLAB_RAY_TOKEN_DIR``). Every cluster we start or find
has its token kept there, so our tools send each cluster its own whatever the shell holds. A token
is never printed.
"""

from __future__ import annotations

import getpass
import hashlib
import logging
import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ray_workflow import cache_dir, files
from ray_workflow.errors import UserError
from ray_workflow.files import atomic_write_text

logger = logging.getLogger(__name__)

AUTH_MODE = "RAY_AUTH_MODE"
TOKEN_VARIABLE = "RAY_AUTH_TOKEN"
TOKEN_PATH_VARIABLE = "RAY_AUTH_TOKEN_PATH"
# Every variable by which Ray takes a token: a cluster we start must see none but ours.
AUTH_VARIABLES = (AUTH_MODE, TOKEN_VARIABLE, TOKEN_PATH_VARIABLE)
MAX_TOKEN_BYTES = 4096  # Ray's tokens are 64 hex digits; anything much larger is not a token


class TokenError(UserError, ValueError):
    """A token file that cannot hold a token (a folder, empty, unreadable); the message names the file."""


@dataclass(frozen=True)
class Token:
    """A token and where it was found, for messages: a file's path or the variable's name. ``repr`` hides it."""

    value: str
    source: str

    def __repr__(self) -> str:
        return f"Token(source={self.source!r})"


def token_dir() -> Path:
    return Path(os.environ.get("ISAACLAB_RAY_TOKEN_DIR") or cache_dir("tokens")).expanduser()


def user_token_path() -> Path:
    """Where Ray's CLI and SDK read the user's token: ``RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token``."""
    return Path(os.environ.get(TOKEN_PATH_VARIABLE) or Path.home() / ".ray" / "auth_token").expanduser()


def _key(address: str) -> str:
    """``http://127.0.0.1:21001`` and ``127.0.0.1:21001`` alike as ``127.0.0.1_21001``."""
    hostport = address.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1]
    return re.sub(r"[^A-Za-z0-9.-]", "_", hostport)


def new_token() -> str:
    """256 random bits, as ``ray get-auth-token --generate`` makes them."""
    return secrets.token_hex(32)


def read_token_file(path: Path) -> str | None:
    """The token in ``path``; None if there is no such file; a file that cannot be a token is an error."""
    try:
        text = files.read_text(path, MAX_TOKEN_BYTES).strip()
    except FileNotFoundError:
        return None
    except files.NotAFile as error:
        raise TokenError(f"token file {path} {error}: it cannot hold a token") from None
    except (OSError, UnicodeDecodeError) as error:
        raise TokenError(f"token file {path} cannot be read ({getattr(error, 'strerror', None) or error})") from None
    if not text or any(char.isspace() for char in text):
        raise TokenError(f"token file {path} does not hold a token (it is empty or holds several words)")
    return text


def user_token() -> Token:
    """The user's token, made (random, mode 0600) if there is none yet, as Ray itself does on first use.

    Two launches at once make one token: the file appears whole (a hard link of a finished temp file), and
    the one that finds it already there reads it.
    """
    path = user_token_path()
    value = read_token_file(path)
    if value is None:
        try:
            _make_user_token(path)
        except OSError as error:
            raise TokenError(f"cannot make your Ray token {path} ({error.strerror}: {error.filename})") from None
        value = read_token_file(path)
        assert value is not None
    if os.environ.get(TOKEN_VARIABLE, value).strip() != value:
        logger.warning(
            "%s in this shell is not your token in %s: Ray's CLI sends the variable, which these clusters refuse",
            TOKEN_VARIABLE,
            path,
        )
    return Token(value, str(path))


def _make_user_token(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(new_token())
        os.link(temp, path)
        logger.info("made your Ray token %s (mode 0600); Ray's CLI uses it with RAY_AUTH_MODE=token", path)
    except FileExistsError:
        pass
    finally:
        os.unlink(temp)


@dataclass(frozen=True)
class Owner:
    """Who starts a cluster. ``id`` tells people apart by their Ray token (16 hex digits of its SHA-256, which
    reveal nothing of it): two people under one login, or under none (root in a container), are still two;
    ``login`` is for messages only."""

    id: str
    login: str


def owner() -> Owner:
    """The user as the owner of the clusters they start: their token (made if need be) and their login."""
    try:
        login = getpass.getuser()
    except (KeyError, OSError):  # a container's uid without a name
        login = f"uid {os.getuid()}"
    return Owner(hashlib.sha256(user_token().value.encode()).hexdigest()[:16], login)


def token_path(address: str) -> Path:
    return token_dir() / f"{_key(address)}.token"


def save_token(addresses: list[str], token: str) -> Path:
    """Keep ``token`` for every address of one cluster (its GCS and its dashboard), readable by the user only."""
    folder = token_dir()
    path = None
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        for address in addresses:
            path = write_private(token_path(address), token)
    except OSError as error:
        raise TokenError(f"cannot keep a cluster's token in {folder} ({error.strerror}: {error.filename})") from None
    assert path is not None
    return path


def write_private(path: Path, token: str) -> Path:
    """Write ``token`` to ``path`` atomically, readable by the user only (mode 0600, before the token is in it)."""
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    return atomic_write_text(path, token)


def forget_token(addresses: list[str]) -> None:
    for address in addresses:
        token_path(address).unlink(missing_ok=True)


def token_for(address: str) -> Token | None:
    """The token our clients send to ``address``: the one kept for that cluster, else Ray's own choice
    (``RAY_AUTH_TOKEN``, then the user's token file), else None."""
    kept = token_path(address)
    if (value := read_token_file(kept)) is not None:
        return Token(value, str(kept))
    if value := os.environ.get(TOKEN_VARIABLE, "").strip():
        return Token(value, TOKEN_VARIABLE)
    path = user_token_path()
    if (value := read_token_file(path)) is not None:
        return Token(value, str(path))
    return None


def bearer_headers(token: str | None) -> dict[str, str]:
    """The headers of a dashboard request that carries ``token`` (none without a token)."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def http_headers(address: str) -> dict[str, str]:
    """What a dashboard (job submission) request to ``address`` must carry."""
    token = token_for(address)
    return bearer_headers(token.value if token else None)


def refusal(cluster: str, address: str, status: int) -> str:
    """One line for a dashboard's 401 (no token sent) or 403 (a token it does not accept) at ``address``."""
    token = token_for(address)
    if status == 401 or token is None:
        return (
            f"{cluster} requires a Ray token and none was found (looked in {token_path(address)}, "
            f"${TOKEN_VARIABLE} and {user_token_path()})"
        )
    return f"{cluster} refused the token from {token.source}: it is not that cluster's token"


def cluster_environment(token: str | None) -> dict[str, str]:
    """The environment of a cluster's processes: token auth on, or off only when asked (``token`` None).

    The token itself, as KubeRay gives it to its Ray containers: a running cluster (and the job drivers it
    starts) then depends on no file that a user may remove or replace.
    """
    if token is None:
        return {AUTH_MODE: "disabled"}
    return {AUTH_MODE: "token", TOKEN_VARIABLE: token}


def driver_environment(token: Token | None) -> dict[str, str]:
    """The environment a Ray driver (a sweep) needs to send ``token``; empty without one."""
    return {AUTH_MODE: "token", TOKEN_VARIABLE: token.value} if token else {}


def prepare_driver(address: str) -> Token | None:
    """Make this process a driver that can connect to ``address`` with the token we find for it (returned).

    Ray reads its auth mode when it is imported, so after setting the environment its config
    is read again, as Ray itself does when ``ray.init`` turns token auth on.
    """
    token = token_for(address)
    if token is None:
        return None
    os.environ.update(driver_environment(token))
    from ray._raylet import Config

    Config.initialize("")
    return token
