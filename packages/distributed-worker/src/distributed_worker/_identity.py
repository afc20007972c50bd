"""Is the ``distributed_worker`` module running here the one from this project?

The public package index has an unrelated project also called
``distributed-worker`` (1.3.x) with the same import name. Installed on top of
ours, or instead of it, a compute node would run a stranger's code. ``dworker``
checks, before anything else, that the installed ``distributed-worker``
distribution is ours: its ``dworker`` console script points at
``distributed_worker.cli:main``, its version is this module's
``__version__``, and its home page is this project's. ``dworker --version``
prints what was found.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import sys

import click

import distributed_core

from ._version import __version__

DIST = "distributed-worker"
ENTRY_POINT = ("console_scripts", "dworker", "distributed_worker.cli:main")
SUMMARY_PREFIX = "Worker node of the distributed cluster"  # from our pyproject.toml


def _location() -> str:
    return os.path.dirname(os.path.abspath(__file__))


def problem() -> str | None:
    """Why this ``distributed_worker`` is not ours (a sentence with the fix), or None."""
    fix = (
        f"run `pip uninstall -y {DIST}` and install ours from the project's wheelhouse "
        f"(`pip install --no-index --find-links WHEELHOUSE {DIST}`); "
        f"`pip show {DIST}` shows which one is installed"
    )
    try:
        dist = md.distribution(DIST)
    except md.PackageNotFoundError:
        return (
            f"distributed_worker at {_location()} is not installed as the {DIST} "
            f"distribution (no metadata found); {fix}"
        )
    group, name, value = ENTRY_POINT
    ours = any(
        ep.group == group and ep.name == name and ep.value == value for ep in dist.entry_points
    )
    summary = dist.metadata.get("Summary") or ""
    if not ours or not summary.startswith(SUMMARY_PREFIX):
        return (
            f"the installed {DIST} {dist.version} ({summary!r}) is another project with "
            f"the same name, not this one's worker; {fix}"
        )
    if dist.version != __version__:
        return (
            f"distributed_worker at {_location()} is version {__version__} but the installed "
            f"{DIST} distribution says {dist.version}: two installations are mixed; {fix}"
        )
    return None


def version_text() -> str:
    """What ``dworker --version`` prints: distribution, version, protocol, location."""
    protocol = ".".join(map(str, distributed_core.PROTOCOL_VERSION))
    text = (
        f"dworker: {DIST} {__version__} (distributed-core {distributed_core.__version__}, "
        f"protocol {protocol}, Python {sys.version.split()[0]})\n"
        f"location: {_location()}"
    )
    issue = problem()
    if issue:
        text += f"\nWARNING: {issue}"
    return text


def print_version(ctx: click.Context, _param, value) -> None:
    """click callback for ``--version``."""
    if not value or ctx.resilient_parsing:
        return
    click.echo(version_text())
    ctx.exit(0)
