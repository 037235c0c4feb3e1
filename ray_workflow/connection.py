"""Which Ray cluster a driver connects to, and a bounded check that something answers there.

Ray's own ``ray.init`` retries an address that does not answer for minutes, and ``auto``
attaches to whichever cluster it finds; our tools say which cluster they mean, or refuse.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from ray_workflow import auth
from ray_workflow.errors import UserError, WorldError, setting

logger = logging.getLogger(__name__)

# Ray's job SDK takes these from the environment in preference to the address it is given.
ADDRESS_OVERRIDES = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")


def drop_address_overrides() -> None:
    """Make the addresses we pass to Ray's job SDK count: with ``RAY_ADDRESS`` exported in the shell (as
    Ray's docs suggest), every ``JobSubmissionClient`` would talk to that one cluster, whatever it is given."""
    for name in ADDRESS_OVERRIDES:
        os.environ.pop(name, None)


class ConnectionInputError(UserError, ValueError):
    """An address that cannot be one (the user's mistake)."""


class ClusterUnreachable(WorldError, RuntimeError):
    """No Ray cluster answers where the sweep was told to run (or several could be meant)."""


def resolve_address(address: str) -> str:
    """``auto`` as one cluster's address, named; several running clusters are refused, not guessed between.

    ``RAY_ADDRESS`` (set by ``ray job submit`` and ``local_clusters.py run``) wins; otherwise
    the GCS processes running on this machine are the candidates.
    """
    if address != "auto":
        return address
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"]
    from ray._private.services import find_gcs_addresses

    running = sorted(find_gcs_addresses())
    flag = setting("ray_address")
    if len(running) > 1:
        raise ClusterUnreachable(
            f"{flag} auto: {len(running)} Ray clusters run on this machine ({', '.join(running)}); "
            f"pass one of them with {flag}"
        )
    if not running:
        raise ClusterUnreachable(f"{flag} auto: no Ray cluster runs here; pass {flag} ADDRESS or local")
    return running[0]


def check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """Fail within ``timeout_s`` if nothing listens at the address (Ray itself retries for minutes)."""
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not port.isdigit() or not host:
        raise ConnectionInputError(f"{setting('ray_address')} {address!r}: expected HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as error:
        raise ClusterUnreachable(
            f"{setting('ray_address')} {address}: no Ray cluster answers there ({error})"
        ) from None


def connect_driver(address: str, *, check: bool = True, **init_options: Any) -> None:
    """``ray.init`` as a driver of the cluster at ``address`` (``auto`` resolved), with the token we find for
    it, or one line saying why not: nothing answers, a token file that cannot be a token, a refused token.

    ``check`` False skips the reachability probe (inside a job, the cluster is the one running it).
    """
    import ray

    address = resolve_address(address)
    if check:
        check_reachable(address)
    logger.info("Connecting to the Ray cluster at %s", address)
    token = auth.prepare_driver(address)
    try:
        ray.init(address=address, **init_options)
    except ConnectionError as error:
        # Something answers there: Ray's GCS refusing the token is what ends this way.
        tried = f"the token from {token.source}" if token else f"no token (none in {auth.user_token_path()})"
        raise ClusterUnreachable(
            f"{setting('ray_address')} {address}: the Ray cluster there did not let us in with {tried}; is it that "
            f"cluster's token? ({error})"
        ) from None
