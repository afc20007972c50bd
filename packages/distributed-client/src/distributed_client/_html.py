"""``_repr_html_`` of Executor, Future and LocalCluster: plain HTML tables.

Jupyter shows them; nothing here imports Jupyter. Every value is escaped.
"""

from __future__ import annotations

from html import escape
from typing import Any

__all__ = ["table", "executor_html", "future_html", "cluster_html"]


def table(title: str, rows: list[tuple[str, Any]], extra: str = "") -> str:
    """A two-column table under a bold title; `extra` (already HTML) follows it."""
    body = "".join(
        f"<tr><th style='text-align:left'>{escape(str(k))}</th>"
        f"<td style='text-align:left'>{escape(str(v))}</td></tr>"
        for k, v in rows
    )
    return f"<div><strong>{escape(title)}</strong><table>{body}</table>{extra}</div>"


def _workers_table(workers: dict[str, int]) -> str:
    if not workers:
        return "<p>no workers</p>"
    rows = "".join(
        f"<tr><td>{escape(str(a))}</td><td>{escape(str(n))}</td></tr>"
        for a, n in sorted(workers.items())
    )
    return f"<table><tr><th>worker</th><th>cores</th></tr>{rows}</table>"


def executor_html(executor: Any) -> str:
    """Center, status, workers and cores as this client knows them (no call to the center)."""
    s = executor.session
    workers: dict[str, int] = {}
    if s is not None and not s.closed:
        try:
            workers = executor._call_in_loop(
                lambda: {a: ws.ncores for a, ws in s.state.workers.items()}
            )
        except Exception:  # noqa: BLE001 - a repr never raises
            workers = {}
    rows = [
        ("center", executor.center or "-"),
        ("status", executor.status),
        ("workers", len(workers)),
        ("cores", sum(workers.values())),
    ]
    if getattr(executor, "cluster", None) is not None:
        rows.append(("cluster", repr(executor.cluster)))
    return table(type(executor).__name__, rows, _workers_table(workers))


def future_html(future: Any) -> str:
    """Key and status of a Future."""
    return table("Future", [("key", future.key), ("status", future.status)])


def cluster_html(cluster: Any) -> str:
    """Center, status and worker processes of a LocalCluster."""
    workers = {a: cluster.ncores for a in cluster.worker_addresses}
    rows = [
        ("center", cluster.center_address or "-"),
        ("status", cluster.status),
        ("workers", len(workers)),
        ("cores", sum(workers.values())),
    ]
    return table(type(cluster).__name__, rows, _workers_table(workers))
