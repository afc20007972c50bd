"""``dworker CENTER_ADDRESS``: run one worker until SIGINT/SIGTERM or ``terminate``.

Prints ``Start worker at tcp://HOST:PORT`` once listening and
``Registered with center at tcp://...`` once registered. Start-up problems
(a bad address, a port in use, an unreachable Center, a worker's address
given instead of the Center's, unreadable TLS files) print one
``dworker: error: ...`` line on stderr and exit with status 1.

Without ``--host`` the worker listens on all interfaces and prints and
registers the local address of the interface that routes to the Center;
``--contact-address`` registers another one (NAT, containers, a relay).

Secure by default (issue 12): without ``--secret-file``, TLS options or
``--insecure``, the worker uses the user's default secret file
(``distributed_core.default_secret_file()``) and refuses to start when it is
missing, saying how to get it. It also refuses to start when the
``distributed_worker`` module it runs is not from this project's
``distributed-worker`` distribution (``_identity.py``).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

import click
from click.core import ParameterSource

from distributed_core import (
    CommClosedError,
    HandshakeError,
    Security,
    config,
    default_secret_file,
    logs,
    normalize_address,
    parse_address,
    parse_resources,
    unparse_address,
)
from distributed_core.lifeline import watch_parent

from . import _identity
from .memory import DEFAULT_FRACTIONS, parse_fraction, parse_memory_limit
from .nanny import DEATH_EXIT_STATUS
from .stream import NotACenterError, RegistrationError
from .worker import Worker

__all__ = ["main"]


def _cfg(key):
    """Option default from distributed_core.config; a bad configuration is a usage error."""
    return config.default(key, click.UsageError)


logger = logging.getLogger("distributed_worker.cli")


class StartupError(Exception):
    """A problem that ends the CLI with one line on stderr."""


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("center_address")
@click.option(
    "--host",
    default=None,
    help="Interface to listen on (name or IP; '::' for all IPv6 interfaces) "
    "[default: all interfaces, advertising the local address that routes to the center].",
)
@click.option(
    "--contact-address",
    default=None,
    help="Address to register with the center and print when it differs from the one "
    "listened on (NAT, containers, a relay), e.g. tcp://203.0.113.7:9000; port 0 means "
    "the listening port.",
)
@click.option(
    "--port",
    default=_cfg("worker.port"),
    show_default="0, config worker.port",
    type=click.IntRange(0, 65535),
    help="Port to listen on (0: any free port).",
)
@click.option(
    "--ncores",
    default=_cfg("worker.ncores"),
    type=click.IntRange(min=1),
    help="Threads running computations [default: number of CPUs].",
)
@click.option("--name", default=None, help="A name for this worker, shown by the center.")
@click.option(
    "--resources",
    default=_cfg("worker.resources"),
    help='Abstract resources this worker offers, e.g. "GPU=2,MEM=8e9"; tasks that ask for '
    "resources run only where they are free [default: none, config worker.resources].",
)
@click.option(
    "--heartbeat-interval",
    default=None,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds between heartbeats [default: what the center asks for].",
)
@click.option(
    "--heartbeat-timeout",
    default=_cfg("timeouts.heartbeat_timeout"),
    show_default="5.0, config timeouts.heartbeat_timeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Treat the center as gone after this many seconds without a word from it "
    "(only with a center that sends heartbeats); the worker keeps its data and reconnects.",
)
@click.option(
    "--connect-timeout",
    default=_cfg("timeouts.connect_timeout"),
    show_default="5.0, config timeouts.connect_timeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds one attempt to reach and register with the center may take "
    "(at start-up and when reconnecting).",
)
@click.option(
    "--fetch-timeout",
    default=_cfg("timeouts.fetch_timeout"),
    show_default="10.0, config timeouts.fetch_timeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds a peer may take to answer a fetch before other holders "
    "(then the center) are asked.",
)
@click.option(
    "--memory-limit",
    default="0",
    show_default=True,
    help="Memory this worker may use: bytes with a unit (4GiB, 500MB), a fraction of the "
    "machine (0.5), 'auto' (the machine's or the cgroup's memory divided among --nworkers), "
    "or 0 for no limit. Beyond its fractions values spill to disk, the worker pauses, the "
    "nanny restarts it.",
)
@click.option(
    "--memory-target-fraction",
    default=str(DEFAULT_FRACTIONS["target"]),
    show_default=True,
    help="Managed memory above this fraction of the limit moves to disk (False: never).",
)
@click.option(
    "--memory-spill-fraction",
    default=str(DEFAULT_FRACTIONS["spill"]),
    show_default=True,
    help="Process memory above this fraction moves values to disk (False: never).",
)
@click.option(
    "--memory-pause-fraction",
    default=str(DEFAULT_FRACTIONS["pause"]),
    show_default=True,
    help="Process memory above this fraction pauses the worker (False: never).",
)
@click.option(
    "--memory-terminate-fraction",
    default=str(DEFAULT_FRACTIONS["terminate"]),
    show_default=True,
    help="Process memory above this fraction makes the nanny restart the worker (False: never).",
)
@click.option(
    "--local-directory",
    default=None,
    help="Directory for spilled values (a temporary directory inside it, removed on exit) "
    "[default: the system's temporary directory].",
)
@click.option(
    "--nanny/--no-nanny",
    default=True,
    show_default=True,
    help="Run the worker in a child process that is restarted when it dies.",
)
@click.option(
    "--nworkers",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Workers to start, each under the nanny.",
)
@click.option(
    "--death-timeout",
    default=None,
    type=click.FloatRange(min=0, min_open=True),
    help="Exit (status 3) when the center has been unreachable this many seconds "
    "[default: keep reconnecting].",
)
@click.option(
    "--secret-file",
    default=_cfg("security.secret_file"),
    help="File holding the cluster's shared secret.",
)
@click.option("--tls-cert", default=_cfg("security.tls_cert"), help="PEM certificate for TLS.")
@click.option("--tls-key", default=_cfg("security.tls_key"), help="PEM private key for TLS.")
@click.option(
    "--tls-ca-file",
    default=_cfg("security.tls_ca_file"),
    help="PEM file of the CA that signs peers.",
)
@click.option(
    "--log-level",
    default=_cfg("logging.level"),
    type=click.Choice(logs.LEVELS, case_sensitive=False),
    help="Log level [default: warning, config logging.level].",
)
@click.option(
    "--log-format",
    default=_cfg("logging.format"),
    type=click.Choice(logs.FORMATS),
    help="Log lines as text or as one JSON object per line [default: text].",
)
@click.option(
    "--insecure",
    is_flag=True,
    flag_value=True,  # click < 8.2 would take `not default()` of a callable default
    default=_cfg("security.insecure"),
    help="Use no secret (for a center started with --insecure); anyone who can reach "
    "this worker's port can run code on it.",
)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_identity.print_version,
    help="Show the distribution, version, protocol and location, and exit.",
)
def main(
    center_address, host, contact_address, port, ncores, name, resources, heartbeat_interval,
    heartbeat_timeout, connect_timeout, fetch_timeout, secret_file, tls_cert, tls_key, tls_ca_file, log_level,
    log_format, insecure,
    **memory_options,
):  # fmt: skip
    """Start a worker that registers with the center at CENTER_ADDRESS."""
    problem = _identity.problem()
    if problem:
        _fail(problem)
    logs.setup(log_level or "warning", log_format)
    try:
        center = normalize_address(center_address)
        if contact_address is not None:
            try:
                contact_address = normalize_address(contact_address)
            except (TypeError, ValueError) as e:
                raise ValueError(f"bad --contact-address: {e}") from None
        security = _security(secret_file, tls_cert, tls_key, tls_ca_file, insecure, host)
        try:
            resources = parse_resources(resources)
        except (TypeError, ValueError) as e:
            raise ValueError(f"bad --resources: {e}") from None
    except (TypeError, ValueError, OSError) as e:
        _fail(str(e))
    memory = _memory_options(memory_options, port)
    if memory.pop("nanny"):
        sys.exit(_run_nanny(memory, name))
    memory.pop("nworkers")
    watch_parent()  # exit when a parent that gave us a lifeline dies
    try:
        asyncio.run(
            _run(
                center,
                host=host,
                port=port,
                ncores=ncores,
                name=name,
                resources=resources,
                heartbeat_interval=heartbeat_interval,
                heartbeat_timeout=heartbeat_timeout,
                contact_address=contact_address,
                connect_timeout=connect_timeout,
                fetch_timeout=fetch_timeout,
                security=security,
                **memory,
            )
        )
    except StartupError as e:
        _fail(str(e))
    except _Death:
        sys.exit(DEATH_EXIT_STATUS)


class _Death(Exception):
    """The worker closed because its center was gone longer than death_timeout."""


def _memory_options(options: dict, port: int) -> dict:
    """Check the memory and nanny options; one ``dworker: error:`` line if bad."""
    try:
        nworkers = options["nworkers"]
        if not options["nanny"] and nworkers > 1:
            raise ValueError("--nworkers needs the nanny: drop --no-nanny")
        if nworkers > 1 and port:
            raise ValueError(f"--port {port} cannot be shared by --nworkers {nworkers}: use 0")
        limit = parse_memory_limit(options["memory_limit"], nprocs=nworkers)
        result = {"memory_limit": limit}
        for name in ("target", "spill", "pause", "terminate"):
            key = f"memory_{name}_fraction"
            result[key] = parse_fraction(name, options[key])
    except ValueError as e:
        _fail(str(e).replace("memory limit ", "--memory-limit ", 1))
    return {
        **result,
        "local_directory": options["local_directory"],
        "death_timeout": options["death_timeout"],
        "nanny": options["nanny"],
        "nworkers": nworkers,
    }


#: options the nanny handles itself rather than passing to its workers
_NANNY_ONLY = {"nanny", "nworkers", "memory_limit", "name", "local_directory"}


def _run_nanny(memory: dict, name) -> int:
    """Run the worker(s) under a `Nanny` with the options given on our command line."""
    from .nanny import Nanny  # stdlib, psutil and the lifeline only

    ctx = click.get_current_context()
    args = [ctx.params["center_address"]]
    for param in ctx.command.params:
        if not isinstance(param, click.Option) or param.name in _NANNY_ONLY:
            continue
        source = ctx.get_parameter_source(param.name)
        if source not in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
            continue
        value = ctx.params[param.name]
        if param.is_flag:
            if value:
                args.append(param.opts[0])
            elif param.secondary_opts:
                args.append(param.secondary_opts[0])
            continue
        for v in value if param.multiple else [value]:
            args += [param.opts[0], str(v)]
    if memory["memory_limit"] is not None:
        args += ["--memory-limit", str(memory["memory_limit"])]
    nanny = Nanny(
        args,
        nworkers=memory["nworkers"],
        memory_limit=memory["memory_limit"],
        terminate_fraction=memory["memory_terminate_fraction"],
        name=name,
        local_directory=memory["local_directory"],
    )
    return nanny.run()


def _security(secret_file, tls_cert, tls_key, tls_ca_file, insecure, host) -> Security:
    explicit = secret_file or tls_cert or tls_ca_file
    if insecure:
        if explicit:
            raise ValueError("--insecure cannot be combined with --secret-file or TLS options")
        if host is None or host not in ("127.0.0.1", "::1", "localhost"):
            logger.warning(
                "--insecure: any process that can reach this worker's port can run "
                "arbitrary code on it; use it only on a trusted network"
            )
        return Security()
    if explicit:
        return Security.from_files(secret_file, tls_cert, tls_key, tls_ca_file)
    path = default_secret_file()
    if not path.exists():
        raise ValueError(
            f"no secret: {path} does not exist. Copy the center's secret file there "
            "(dcenter prints the command: install -d -m 700 ~/.config/distributed && "
            "scp -p USER@CENTERHOST:~/.config/distributed/secret ~/.config/distributed/secret), "
            "or pass --secret-file FILE, or --insecure for a center started with --insecure"
        )
    return Security.from_files(str(path))


def _fail(message: str) -> None:
    click.echo(f"dworker: error: {message}", err=True)
    sys.exit(1)


async def _run(center, *, host, port, connect_timeout, security, **kwargs) -> None:
    worker = Worker(center, connect_timeout=connect_timeout, security=security, **kwargs)
    scheme = "tls" if center.startswith("tls://") else "tcp"
    if host is None:
        host = parse_address(worker.listen_everywhere_address())[1]
    try:
        address = unparse_address(scheme, host.strip("[]"), port)
        address = normalize_address(address)
        await worker.listen(address)
    except (OSError, ValueError) as e:
        await worker.close(unregister=False)
        raise StartupError(_listen_error(address, e)) from None
    click.echo(f"Start worker at {worker.address}")
    sys.stdout.flush()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        registering = asyncio.ensure_future(worker.register())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait([registering, stopping], return_when=asyncio.FIRST_COMPLETED)
        if not registering.done():  # interrupted while waiting for the center
            registering.cancel()
            await asyncio.gather(registering, return_exceptions=True)
            await worker.close(unregister=False)
            return
        stopping.cancel()
        try:
            registering.result()
        except NotACenterError as e:
            raise StartupError(str(e)) from None
        except HandshakeError as e:  # versions or secrets disagree: the center is there
            raise StartupError(f"cannot register with the center at {center}: {e}") from None
        except (CommClosedError, RegistrationError, OSError) as e:
            raise StartupError(
                f"cannot register with the center at {center}: {e}; is dcenter running there?"
            ) from None
        click.echo(f"Registered with center at {center}")
        sys.stdout.flush()

        stopping = asyncio.ensure_future(stop.wait())
        finished = asyncio.ensure_future(worker.finished())
        await asyncio.wait([stopping, finished], return_when=asyncio.FIRST_COMPLETED)
        for task in (stopping, finished):
            task.cancel()
        if stop.is_set():
            logger.info("signal received: shutting down")
        await worker.close()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
    if worker.death is not None:
        raise _Death(worker.death)


def _listen_error(address: str, e: Exception) -> str:
    text = str(e)
    if isinstance(e, OSError) and e.strerror and not text.startswith("cannot listen"):
        text = e.strerror
    if not text.startswith("cannot listen"):
        text = f"cannot listen on {address}: {text}"
    if "in use" in text:
        text += "; pick another with --port, or --port 0 for any free port"
    return text
