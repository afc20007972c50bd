"""``/metrics``: the center's figures in Prometheus text format (``prometheus_client``).

A collector reads the center's state at scrape time (nothing is updated on
the hot path); each center has its own registry, so several centers in one
process (tests, LocalCluster) do not clash.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .views import workers_table

__all__ = ["CONTENT_TYPE", "CenterCollector", "render"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class CenterCollector:
    """Prometheus collector over a Center (and its dashboard's loop-lag probe)."""

    def __init__(self, center, dashboard=None):
        self.center = center
        self.dashboard = dashboard

    def collect(self):
        center = self.center
        rows = workers_table(center.state.workers(), time.time())
        ev = center.events

        def gauge(name, doc, value):
            g = GaugeMetricFamily(f"distributed_{name}", doc)
            g.add_metric([], value)
            return g

        def counter(name, doc, value):
            c = CounterMetricFamily(f"distributed_{name}", doc)
            c.add_metric([], value)
            return c

        yield gauge("workers", "Workers registered with the center", len(rows))
        yield gauge(
            "cores", "Compute threads over all workers", sum(r["ncores"] or 0 for r in rows)
        )
        yield gauge("keys", "Keys known to the center", center.state.n_keys)
        yield gauge("bytes", "Bytes of the keys held by workers (as reported)",
                    sum(r["managed"] for r in rows))  # fmt: skip
        yield gauge("tasks_executing", "Tasks running on workers (as of their last heartbeat)",
                    sum(r["executing"] for r in rows))  # fmt: skip
        yield counter("tasks_completed", "Tasks finished without error", ev.tasks_completed)
        yield counter("tasks_erred", "Tasks that raised", ev.tasks_erred)
        yield counter("transfers", "Peer-to-peer fetches between workers", ev.transfers)
        yield counter("transfer_bytes", "Bytes fetched between workers", ev.transfer_bytes)
        lag = self.dashboard.loop_lag if self.dashboard is not None else 0.0
        yield gauge("event_loop_lag_seconds", "Center event loop lag, last measurement", lag)
        age = GaugeMetricFamily(
            "distributed_worker_heartbeat_age_seconds",
            "Seconds since the center last heard from each worker",
            labels=["worker"],
        )
        memory = GaugeMetricFamily(
            "distributed_worker_memory_bytes",
            "Resident memory of each worker process (its last heartbeat)",
            labels=["worker"],
        )
        for r in rows:
            if r["heartbeat_age"] is not None:
                age.add_metric([r["address"]], r["heartbeat_age"])
            if r["memory"] is not None:
                memory.add_metric([r["address"]], r["memory"])
        yield age
        yield memory


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
