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

``dcenter`` is a click group: without a subcommand it runs the center (so
``dcenter --port 0`` works as always); ``dcenter status [ADDRESS]`` prints the
workers table of a running center (:mod:`distributed_center.status`).
Defaults of the options come from :mod:`distributed_core.config`
(flag > ``DISTRIBUTED_*`` variable > config file > default).
"""

from __future__ import annotations

import asyncio
import errno
import getpass
import ipaddress
import logging
import shlex
import signal

import click

import distributed_core
from distributed_core import (
    Security,
    config,
    ensure_secret_file,
    logs,
    normalize_address,
    parse_address,
    unparse_address,
)
from distributed_core.lifeline import watch_parent

from ._version import __version__
from .center import DEFAULT_PORT, Center
from .status import status

__all__ = ["main"]


def _cfg(key):
    """Option default from distributed_core.config; a bad configuration is a usage error."""
    return config.default(key, click.UsageError)


logger = logging.getLogger("distributed_center")


class StartupError(Exception):
    """The center could not start; the message is shown to the user as is."""


@click.group(
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option(
    "--host",
    default=_cfg("center.host"),
    help="Interface to listen on (name or IP; '::' for all IPv6 interfaces). "
    "[default: all IPv4 interfaces, advertising the address of the interface "
    "that holds the default route]",
)
@click.option(
    "--port",
    default=_cfg("center.port"),
    show_default="8787, config center.port",
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
    default=_cfg("timeouts.heartbeat_interval"),
    show_default="1.0, config timeouts.heartbeat_interval",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds between heartbeats, both ways on each worker's report stream.",
)
@click.option(
    "--heartbeat-timeout",
    default=_cfg("timeouts.heartbeat_timeout"),
    show_default="5.0, config timeouts.heartbeat_timeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Drop a worker (and its keys) after this many silent seconds.",
)
@click.option(
    "--client-timeout",
    default=_cfg("timeouts.client_timeout"),
    show_default="300.0, config timeouts.client_timeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Delete the data of a client that sent no heartbeat for this many seconds.",
)
@click.option(
    "--secret-file",
    default=_cfg("security.secret_file"),
    help="File holding the cluster's shared secret.",
)
@click.option(
    "--tls-cert",
    default=_cfg("security.tls_cert"),
    help="PEM certificate; enables tls://.",
)
@click.option("--tls-key", default=_cfg("security.tls_key"), help="PEM private key of --tls-cert.")
@click.option(
    "--tls-ca-file",
    default=_cfg("security.tls_ca_file"),
    help="PEM CA file to verify peers with.",
)
@click.option(
    "--require-client-cert",
    is_flag=True,
    flag_value=True,  # click < 8.2 would take `not default()` of a callable default
    default=_cfg("security.require_client_cert"),
    help="Refuse TLS peers without a certificate signed by --tls-ca-file.",
)
@click.option(
    "--insecure",
    is_flag=True,
    flag_value=True,  # click < 8.2 would take `not default()` of a callable default
    default=_cfg("security.insecure"),
    help="Accept peers without any secret or certificate (anyone who can reach the port "
    "can run code on the cluster). Without it, the default secret file is used.",
)
@click.option(
    "--dashboard-address",
    default="",
    help="Where the dashboard listens: HOST:PORT, :PORT or PORT [default: port 8788 "
    "(config dashboard.port) on the center's host; a free port when that one is busy].",
)
@click.option(
    "--dashboard/--no-dashboard",
    default=_cfg("dashboard.enabled"),
    help="Serve the dashboard (status page, JSON API, /metrics, /health) [default: on].",
)
@click.option(
    "--log-level",
    default=_cfg("logging.level"),
    type=click.Choice(logs.LEVELS, case_sensitive=False),
    help="Log level [default: info, config logging.level].",
)
@click.option(
    "--log-format",
    default=_cfg("logging.format"),
    type=click.Choice(logs.FORMATS),
    help="Log lines as text or as one JSON object per line [default: text].",
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
    client_timeout,
    secret_file,
    tls_cert,
    tls_key,
    tls_ca_file,
    require_client_cert,
    insecure,
    dashboard_address,
    dashboard,
    log_level,
    log_format,
):
    """Run the Center of a distributed cluster (or a subcommand: dcenter status)."""
    if click.get_current_context().invoked_subcommand is not None:
        return
    logs.setup(log_level or "info", log_format)
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
    explicit = (secret_file, tls_cert, tls_ca_file, require_client_cert)
    if insecure and any(explicit):
        raise click.UsageError("--insecure cannot be combined with --secret-file or TLS options")
    # only the built-in default port is a preference (a busy one is replaced);
    # a port given on the command line or in the configuration is a requirement
    port_is_default = (
        click.get_current_context().get_parameter_source("port")
        == click.core.ParameterSource.DEFAULT
        and port == DEFAULT_PORT
        and not config.load().is_set("center.port")
    )
    try:
        if insecure:
            security, secret_note = Security(), None
            _warn_insecure(host)
        elif any(explicit):
            security = _security(secret_file, tls_cert, tls_key, tls_ca_file, require_client_cert)
            secret_note = None
        else:
            security, secret_note = _default_security()
        address = _listen_address(host, port, tls=tls_cert is not None)
        watch_parent()  # exit when a parent that gave us a lifeline (LocalCluster) dies
        asyncio.run(
            _run(
                address, security, heartbeat_interval, heartbeat_timeout, contact_address,
                dashboard_address if dashboard else None,
                secret_note=secret_note, port_is_default=port_is_default,
                client_timeout=client_timeout,
            )
        )  # fmt: skip
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


def _default_security():
    """The default secret file's Security (creating the file); (security, (path, created))."""
    try:
        path, created = ensure_secret_file()
        return Security.from_files(secret_file=str(path)), (path, created)
    except (ValueError, OSError) as e:
        raise StartupError(
            f"cannot use the default secret file: {e}; pass --secret-file FILE, or --insecure"
        ) from None


def _is_loopback(host) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(str(host).strip("[]")).is_loopback
    except ValueError:
        return False


def _warn_insecure(host) -> None:
    if not _is_loopback(host):
        logger.warning(
            "--insecure: any process that can reach this center's port (listening on %s) "
            "can register as a worker or client and run arbitrary code, as %s, on every "
            "worker of the cluster; use it only on a trusted network",
            host or "all interfaces",
            getpass.getuser(),
        )


def join_instructions(address: str, path, created: bool) -> list[str]:
    """What dcenter prints below its address: where the secret is and how a worker joins."""
    lines = [
        f"Peers must prove they know the secret in {path}"
        + (" (created now, mode 0600)." if created else "."),
        "Workers and clients of this user on this machine find it by themselves.",
    ]
    host = parse_address(address)[1]
    if _is_loopback(host):
        lines.append("This center listens on loopback: only this machine can join.")
        return lines
    remote = f"{getpass.getuser()}@{host if ':' not in host else '[' + host + ']'}:{path}"
    lines += [
        "To add a worker on another machine, run there:",
        "  install -d -m 700 ~/.config/distributed && "
        f"scp -p {shlex.quote(remote)} ~/.config/distributed/secret && "
        f"dworker {shlex.quote(address)}",
    ]
    return lines


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


async def _run(
    address,
    security,
    heartbeat_interval,
    heartbeat_timeout,
    contact_address=None,
    dashboard_address=None,
    *,
    secret_note=None,
    port_is_default=False,
    client_timeout=None,
):
    center = Center(
        security=security,
        heartbeat_interval=heartbeat_interval,
        heartbeat_timeout=heartbeat_timeout,
        contact_address=contact_address,
        dashboard_address=dashboard_address,
        client_timeout=client_timeout,
    )
    try:
        try:
            await center.listen(address)
        except OSError as e:
            if not (port_is_default and e.errno == errno.EADDRINUSE):
                raise
            # as dask does: the default port is only a preference
            scheme, host, port = parse_address(address)
            address = unparse_address(scheme, host, 0)
            await center.listen(address)
            logger.warning(
                "port %s is already in use; listening on port %s instead",
                port,
                parse_address(center.address)[2],
            )
    except (OSError, ValueError) as e:
        await center.close()
        raise StartupError(_listen_error(address, e)) from None

    print(f"Start center at {center.address}", flush=True)
    if center.dashboard is not None:
        print(f"Dashboard at {center.dashboard.url}", flush=True)
    if secret_note is not None:
        print("\n".join(join_instructions(center.address, *secret_note)), flush=True)

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


main.add_command(status)


if __name__ == "__main__":  # pragma: no cover
    main()
