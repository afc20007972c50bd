"""The data behind every view, as plain JSON-ready structures (no I/O).

Used by the JSON API (``/api/v1/...``), by ``/metrics`` and by ``dcenter
status``, so the page, the scraper and the terminal show the same figures.
"""

from __future__ import annotations

import time

__all__ = ["totals", "workers_table"]


def workers_table(workers: dict, now: float | None = None) -> list[dict]:
    """Rows of the workers table from the ``workers`` op's answer.

    Each row: ``address``, ``name``, ``ncores``, ``memory`` (process RSS, bytes),
    ``managed`` (bytes of the keys held), ``unmanaged`` (memory - managed, when
    the memory is known), ``spilled`` (when reported), ``keys``, ``executing``
    (tasks running), ``last_seen`` and ``heartbeat_age`` (seconds),
    ``resources`` (what the worker declared, ``{name: amount}``; issue 10).
    """
    now = time.time() if now is None else now
    rows = []
    for address, info in sorted(workers.items()):
        metrics = info.get("metrics") or {}
        memory = _number(metrics.get("memory"))
        managed = _number(info.get("nbytes")) or 0
        rows.append(
            {
                "address": address,
                "name": info.get("name"),
                "ncores": info.get("ncores"),
                "memory": memory,
                "managed": managed,
                "unmanaged": None if memory is None else max(memory - managed, 0),
                "spilled": _number(metrics.get("spilled")),
                "keys": info.get("nkeys", 0),
                "executing": _number(metrics.get("executing")) or 0,
                "last_seen": info.get("last_seen"),
                "heartbeat_age": max(now - info["last_seen"], 0.0)
                if isinstance(info.get("last_seen"), (int, float))
                else None,
                "resources": info.get("resources") or {},
            }
        )
    return rows


def totals(rows: list[dict]) -> dict:
    """Cluster totals of a workers table."""
    return {
        "workers": len(rows),
        "ncores": sum(r["ncores"] or 0 for r in rows),
        "keys": sum(r["keys"] or 0 for r in rows),
        "managed": sum(r["managed"] or 0 for r in rows),
        "memory": sum(r["memory"] or 0 for r in rows),
        "executing": sum(r["executing"] or 0 for r in rows),
    }


def _number(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def format_table(rows: list[dict], total: dict) -> str:
    """The workers table as text, for ``dcenter status``."""
    header = ("NAME", "ADDRESS", "CORES", "MEMORY", "MANAGED", "KEYS", "RUNNING", "HEARTBEAT")
    lines = [header]
    for r in rows:
        lines.append(
            (
                "-" if r["name"] is None else str(r["name"]),
                r["address"],
                str(r["ncores"]),
                _bytes(r["memory"]),
                _bytes(r["managed"]),
                str(r["keys"]),
                str(r["executing"]),
                "-" if r["heartbeat_age"] is None else f"{r['heartbeat_age']:.1f}s ago",
            )
        )
    lines.append(
        ("TOTAL", f"{total['workers']} workers", str(total["ncores"]), _bytes(total["memory"]),
         _bytes(total["managed"]), str(total["keys"]), str(total["executing"]), "")
    )  # fmt: skip
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in lines
    )


def _bytes(n) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
