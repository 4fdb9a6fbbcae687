"""Where the work runs: Ray started in this process (the default, no cluster needed) or a cluster joined.

Without `--address`, Ray starts in this process with as many CPUs as the workers need and no dashboard;
`auto` joins the cluster this machine belongs to (`ray start` ran here), `HOST:PORT` a cluster's head node.
An address where nothing listens is refused at once, naming it (Ray itself would retry for a minute).
"""

import os
import socket

import ray

from runtime.distributed import ClusterError


def check_address(address: str | None) -> None:
    """ClusterError naming `address` if it is `HOST:PORT` and nothing listens there."""
    if address in (None, "", "auto", "local") or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=2.0):
            return
    except (OSError, ValueError) as exc:
        raise ClusterError(
            f"no Ray cluster at {address!r} ({exc}); start one with `ray start --head` or leave --address "
            "out to run locally"
        ) from None


def start(cpus: int, address: str | None = None) -> None:
    """Ray, locally (`cpus` CPUs, no dashboard) or joined to the cluster at `address`."""
    if ray.is_initialized():
        return
    check_address(address)
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if address in (None, "", "local"):
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    else:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
