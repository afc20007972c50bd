"""``dcenter``: run a Center from the command line.

Prints ``Start center at tcp://HOST:PORT`` once it listens, and shuts down
cleanly (exit code 0) on SIGINT, SIGTERM or the ``terminate`` op. Start-up
problems (bad address, port in use, unreadable TLS files) are one line on
stderr and a non-zero exit.

Without ``--host`` it listens on all IPv4 interfaces and prints the address
of the interface that holds the default route (``127.0.0.1`` only on a
machine with no other interface); ``--host ::`` listens on IPv6 and prints
``tcp://[v6]:PORT``; ``--contact-address`` prints and gives out another
address than the one listened on (NAT, containers, a relay).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import sys

import click

import distributed_core
from distributed_core import Security, normalize_address, unparse_address
from distributed_core.lifeline import watch_parent
from distributed_core.timeouts import DEFAULTS

from ._version import __version__
from .center import DEFAULT_PORT, Center

__all__ = ["main"]

logger = logging.getLogger("distributed_center")


class StartupError(Exception):
    """The center could not start; the message is shown to the user as is."""


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--host",
    default=None,
    help="Interface to listen on (name or IP; '::' for all IPv6 interfaces). "
    "[default: all IPv4 interfaces, advertising the address of the interface "
    "that holds the default route]",
)
@click.option(
    "--port",
    default=DEFAULT_PORT,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on (0 picks a free one).",
)
@click.option(
    "--contact-address",
    default=None,
    help="Address to print and give out when it differs from the one listened on "
    "(NAT, containers, a relay), e.g. tcp://203.0.113.5:8787.",
)
@click.option(
    "--heartbeat-interval",
    default=DEFAULTS.heartbeat_interval,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds between heartbeats, both ways on each worker's report stream.",
)
@click.option(
    "--heartbeat-timeout",
    default=DEFAULTS.heartbeat_timeout,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Drop a worker (and its keys) after this many silent seconds.",
)
@click.option("--secret-file", default=None, help="File holding the cluster's shared secret.")
@click.option("--tls-cert", default=None, help="PEM certificate; enables tls://.")
@click.option("--tls-key", default=None, help="PEM private key of --tls-cert.")
@click.option("--tls-ca-file", default=None, help="PEM CA file to verify peers with.")
@click.option(
    "--require-client-cert",
    is_flag=True,
    default=False,
    help="Refuse TLS peers without a certificate signed by --tls-ca-file.",
)
@click.version_option(
    __version__,
    prog_name="dcenter",
    message=(
        f"%(prog)s %(version)s (distributed-core {distributed_core.__version__}, "
        f"protocol {'.'.join(map(str, distributed_core.PROTOCOL_VERSION))})"
    ),
)
def main(
    host,
    port,
    contact_address,
    heartbeat_interval,
    heartbeat_timeout,
    secret_file,
    tls_cert,
    tls_key,
    tls_ca_file,
    require_client_cert,
):
    """Run the Center of a distributed cluster."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    if heartbeat_timeout <= heartbeat_interval:
        raise click.UsageError(
            f"--heartbeat-timeout ({heartbeat_timeout:g}) must be larger than "
            f"--heartbeat-interval ({heartbeat_interval:g})"
        )
    if tls_key is not None and tls_cert is None:
        raise click.UsageError("--tls-key needs --tls-cert")
    if contact_address is not None:
        try:
            contact_address = normalize_address(contact_address)
        except (TypeError, ValueError) as e:
            raise click.BadParameter(str(e), param_hint="--contact-address") from None
    try:
        security = _security(secret_file, tls_cert, tls_key, tls_ca_file, require_client_cert)
        address = _listen_address(host, port, tls=tls_cert is not None)
        watch_parent()  # exit when a parent that gave us a lifeline (LocalCluster) dies
        asyncio.run(_run(address, security, heartbeat_interval, heartbeat_timeout, contact_address))
    except StartupError as e:
        raise click.ClickException(str(e)) from None
    except KeyboardInterrupt:  # before the signal handlers were installed
        pass


def _security(secret_file, tls_cert, tls_key, tls_ca_file, require_client_cert):
    if not (secret_file or tls_cert or tls_ca_file or require_client_cert):
        return None
    try:
        return Security.from_files(
            secret_file=secret_file,
            tls_cert=tls_cert,
            tls_key=tls_key,
            tls_ca_file=tls_ca_file,
            require_client_cert=require_client_cert,
        )
    except (ValueError, TypeError, OSError) as e:
        raise StartupError(str(e)) from None


def _listen_error(address: str, e: Exception) -> str:
    reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
    text = reason if reason.startswith("cannot listen") else f"cannot listen on {address}: {reason}"
    if isinstance(e, OSError) and e.errno == errno.EADDRINUSE:
        text += "; stop the other process or choose another --port"
    return text


def _listen_address(host, port, tls: bool) -> str:
    scheme = "tls" if tls else "tcp"
    host = "0.0.0.0" if host in (None, "") else host
    return unparse_address(scheme, host, port)


async def _run(address, security, heartbeat_interval, heartbeat_timeout, contact_address=None):
    center = Center(
        security=security,
        heartbeat_interval=heartbeat_interval,
        heartbeat_timeout=heartbeat_timeout,
        contact_address=contact_address,
    )
    try:
        await center.listen(address)
    except (OSError, ValueError) as e:
        await center.close()
        raise StartupError(_listen_error(address, e)) from None

    print(f"Start center at {center.address}", flush=True)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    waiters = [
        asyncio.ensure_future(stop.wait()),
        asyncio.ensure_future(center.finished()),
    ]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    if stop.is_set():
        logger.info("Received signal, shutting down")
    await center.close()


if __name__ == "__main__":  # pragma: no cover
    main()
