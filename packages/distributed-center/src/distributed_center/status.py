"""``dcenter status [ADDRESS]``: the workers table of a running center, in a terminal.

The same figures as the dashboard's status page (both use
:func:`distributed_center.dashboard.views.workers_table`), fetched over the
cluster protocol (``identity`` and ``workers`` ops), so it works without the
dashboard. ``--json`` prints ``{"center": ..., "workers": [...], "totals": ...}``.
Every wait is bounded: connecting by ``connect_timeout`` and each answer by
``center_timeout`` (:mod:`distributed_core.config`). An unreachable center is
one line on stderr and exit status 1.
"""

from __future__ import annotations

import asyncio
import json
import time

import click

from distributed_core import Security, config, normalize_address, rpc

__all__ = ["status"]


def _cfg(key):
    """Option default from distributed_core.config; a bad configuration is a usage error."""
    return config.default(key, click.UsageError)


@click.command()
@click.argument("address", default="tcp://127.0.0.1:8787", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--secret-file",
    default=_cfg("security.secret_file"),
    help="File holding the cluster's shared secret.",
)
@click.option("--tls-cert", default=_cfg("security.tls_cert"), help="PEM certificate.")
@click.option("--tls-key", default=_cfg("security.tls_key"), help="PEM private key.")
@click.option("--tls-ca-file", default=_cfg("security.tls_ca_file"), help="PEM CA file.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=_cfg("timeouts.connect_timeout"),
    help="Seconds to reach the center [default: timeouts.connect_timeout, 5].",
)
def status(address, as_json, secret_file, tls_cert, tls_key, tls_ca_file, timeout):
    """Print the workers of the center at ADDRESS [default: tcp://127.0.0.1:8787]."""
    from .dashboard.auth import dashboard_token
    from .dashboard.views import format_table, totals, workers_table

    try:
        address = normalize_address(address)
        security = None
        if secret_file or tls_cert or tls_ca_file:
            security = Security.from_files(secret_file, tls_cert, tls_key, tls_ca_file)
    except (TypeError, ValueError, OSError) as e:
        raise click.ClickException(str(e)) from None
    try:
        identity, workers = asyncio.run(_fetch(address, security, timeout))
    except Exception as e:  # noqa: BLE001 - any failure: one line, exit 1
        reason = str(e) or type(e).__name__
        click.echo(f"dcenter status: cannot reach the center at {address}: {reason}", err=True)
        raise SystemExit(1) from None
    rows = workers_table(workers, time.time())
    total = totals(rows)
    token = dashboard_token(security.secret if security is not None else None)
    if as_json:
        out = {"center": identity, "workers": rows, "totals": total}
        if token:
            out["dashboard_token"] = token
        click.echo(json.dumps(out, default=str, indent=2))
        return
    click.echo(f"Center {identity.get('address', address)}: {total['workers']} workers, "
               f"{identity.get('keys', total['keys'])} keys")  # fmt: skip
    click.echo(format_table(rows, total))
    if token:
        click.echo(f"Dashboard token: {token} (open the dashboard with ?token={token})")


async def _fetch(address, security, timeout):
    center = rpc(address, security=security, connect_timeout=timeout)
    try:
        answer_timeout = max(timeout, config.get("timeouts.center_timeout"))
        identity = await asyncio.wait_for(center.identity(), answer_timeout)
        if not isinstance(identity, dict) or identity.get("type") != "Center":
            kind = identity.get("type") if isinstance(identity, dict) else type(identity).__name__
            raise ValueError(f"it is a {kind}, not a center")
        workers = await asyncio.wait_for(center.workers(), answer_timeout)
        return identity, workers
    finally:
        await center.close_rpc()
