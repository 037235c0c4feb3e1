"""Ray's token authentication, the one place where our tools set ``RAY_AUTH_MODE`` and find tokens.

Every cluster we start requires a token (Ray's ``RAY_AUTH_MODE=token``): local clusters get
a fresh one each, KubeRay clusters one that KubeRay keeps in a Secret. Tokens are kept per
cluster address in files only the user can read (``~/.cache/isaaclab_ray/tokens``, or
``$ISAACLAB_RAY_TOKEN_DIR``), so job submission, sweeps and checks send each cluster its own
token without the user pasting it. A token is never printed.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from ray_workflow.atomic_file import atomic_write_text

AUTH_MODE = "RAY_AUTH_MODE"
# Every variable by which Ray takes a token: a cluster we start must see none but ours.
AUTH_VARIABLES = (AUTH_MODE, "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
DEFAULT_TOKEN_DIR = Path("~/.cache/isaaclab_ray/tokens").expanduser()


def token_dir() -> Path:
    return Path(os.environ.get("ISAACLAB_RAY_TOKEN_DIR") or DEFAULT_TOKEN_DIR).expanduser()


def _key(address: str) -> str:
    """``http://127.0.0.1:21001`` and ``127.0.0.1:21001`` alike as ``127.0.0.1_21001``."""
    hostport = address.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1]
    return re.sub(r"[^A-Za-z0-9.-]", "_", hostport)


def new_token() -> str:
    return secrets.token_hex(32)


def token_path(address: str) -> Path:
    return token_dir() / f"{_key(address)}.token"


def save_token(addresses: list[str], token: str) -> Path:
    """Keep ``token`` for every address of one cluster (its GCS and its dashboard), readable by the user only."""
    folder = token_dir()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = None
    for address in addresses:
        path = token_path(address)
        path.touch(mode=0o600, exist_ok=True)
        path.chmod(0o600)
        atomic_write_text(path, token)
    assert path is not None
    return path


def forget_token(addresses: list[str]) -> None:
    for address in addresses:
        token_path(address).unlink(missing_ok=True)


def token_for(address: str) -> str | None:
    """The token we keep for ``address``, else ``RAY_AUTH_TOKEN`` from the environment, else None."""
    try:
        return token_path(address).read_text().strip() or None
    except OSError:
        return os.environ.get("RAY_AUTH_TOKEN") or None


def bearer_headers(token: str | None) -> dict[str, str]:
    """The headers of a dashboard request that carries ``token`` (none without a token)."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def http_headers(address: str) -> dict[str, str]:
    """What a dashboard (job submission) request to ``address`` must carry."""
    return bearer_headers(token_for(address))


def cluster_environment(token_file: Path | None) -> dict[str, str]:
    """The environment of a cluster's processes: token auth on, or off only when asked (``token_file`` None)."""
    if token_file is None:
        return {AUTH_MODE: "disabled"}
    return {AUTH_MODE: "token", "RAY_AUTH_TOKEN_PATH": str(token_file)}


def driver_environment(address: str) -> dict[str, str]:
    """The environment a Ray driver (a sweep) needs to connect to ``address``; empty if we know no token."""
    token = token_for(address)
    return {AUTH_MODE: "token", "RAY_AUTH_TOKEN": token} if token else {}


def prepare_driver(address: str) -> None:
    """Make this process a driver that can connect to ``address``: its token, if we keep one.

    Ray reads its auth mode when it is imported, so after setting the environment its config
    is read again, as Ray itself does when ``ray.init`` turns token auth on.
    """
    environment = driver_environment(address)
    if not environment:
        return
    os.environ.update(environment)
    from ray._raylet import Config

    Config.initialize("")
