"""Which Ray cluster a driver connects to, and a bounded check that something answers there.

Ray's own ``ray.init`` retries an address that does not answer for minutes, and ``auto``
attaches to whichever cluster it finds; our tools say which cluster they mean, or refuse.
"""

from __future__ import annotations

import os
import socket

# Ray's job SDK takes these from the environment in preference to the address it is given.
ADDRESS_OVERRIDES = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")


def drop_address_overrides() -> None:
    """Make the addresses we pass to Ray's job SDK count: with ``RAY_ADDRESS`` exported in the shell (as
    Ray's docs suggest), every ``JobSubmissionClient`` would talk to that one cluster, whatever it is given."""
    for name in ADDRESS_OVERRIDES:
        os.environ.pop(name, None)


class ConnectionInputError(ValueError):
    """An address that cannot be one (the user's mistake)."""


class ClusterUnreachable(RuntimeError):
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
    if len(running) > 1:
        raise ClusterUnreachable(
            f"--ray_address auto: {len(running)} Ray clusters run on this machine ({', '.join(running)}); "
            "pass one of them with --ray_address"
        )
    if not running:
        raise ClusterUnreachable("--ray_address auto: no Ray cluster runs here; pass --ray_address ADDRESS or local")
    return running[0]


def check_reachable(address: str, flag: str = "--ray_address", timeout_s: float = 10.0) -> None:
    """Fail within ``timeout_s`` if nothing listens at the address (Ray itself retries for minutes)."""
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not port.isdigit() or not host:
        raise ConnectionInputError(f"{flag} {address!r}: expected HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as error:
        raise ClusterUnreachable(f"{flag} {address}: no Ray cluster answers there ({error})") from None
