"""GET /metrics (SPEC §10): Prometheus text, from this process's HTTP figures and the fleet's rows.

For the clients of `[http] ops_allow` only (SPEC §13). Per machine, the figures are what its
recorder writes into `machines` with its heartbeat, so one scrape of any API process shows every
machine of the database. Per API process, requests (by function and envelope code) with a
latency histogram, and open streams. With `[http] processes` > 1 the processes' figures are
summed through prometheus-client's multiprocess mode: the runtime sets PROMETHEUS_MULTIPROC_DIR
(a private directory) before this module is imported and before any fork, and the supervisor
marks a dead worker's files dead.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import bottle
import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess, values
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from pbxcontrol.auth.proxy import Network, parse_networks
from pbxcontrol.http import health

#: `[http] ops_allow`'s default: this host only.
LOOPBACK = parse_networks("127.0.0.1, ::1")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: (metric, help, kind, value of a MachineHealth and its row) — the per-machine figures.
_FLEET: tuple[tuple[str, str, str, Callable[[Any, Any], float]], ...] = (
    ("machine_recording", "1 while the machine is recorded (/health)", "gauge",
     lambda m, r: m.recording),
    ("machine_connected", "1 while its holder's ARI websocket is up", "gauge",
     lambda m, r: m.connected),
    ("machine_recorded", "1 while its lease was renewed within 2 x takeover_seconds; 0: its "
     "legs carry recorded 0", "gauge", lambda m, r: m.recorded),
    ("machine_live_legs", "legs live on the machine, as the API lists them", "gauge",
     lambda m, r: m.live_legs),
    ("machine_events_received", "ARI messages its holder has read", "counter",
     lambda m, r: r.events_total),
    ("machine_events_per_second", "ARI messages per second, last heartbeat", "gauge",
     lambda m, r: r.events_per_second),
    ("machine_reconnects", "ARI websocket reconnections of its holder", "counter",
     lambda m, r: getattr(r, "reconnects", 0)),
    ("machine_reconciles", "reconciles with GET /channels by its holder", "counter",
     lambda m, r: getattr(r, "reconciles", 0)),
    ("machine_reconcile_corrections", "legs a reconcile added or ended", "counter",
     lambda m, r: getattr(r, "corrections", 0)),
    ("machine_lag_seconds", "longest time from reading an event to committing it, "
     "last heartbeat", "gauge", lambda m, r: getattr(r, "lag_seconds", 0.0)),
    ("machine_renewed_age_seconds", "seconds since its holder renewed its lease", "gauge",
     lambda m, r: m.renewed_age if m.renewed_age is not None else float("nan")),
    ("machine_last_event_age_seconds", "seconds since its last message from Asterisk",
     "gauge", lambda m, r: m.last_event_age if m.last_event_age is not None else float("nan")),
)  # fmt: skip


class FleetCollector(Collector):
    """The machines' rows, read at each scrape."""

    def __init__(self, engine: Engine, ids: list[int], takeover: float) -> None:
        self.engine, self.ids, self.takeover = engine, ids, takeover

    def collect(self) -> Iterator[Any]:
        up = GaugeMetricFamily("pbxcontrol_database_up", "1 when the database answers")
        try:
            with self.engine.connect() as conn:
                found = health.machines(conn, self.ids, self.takeover)
        except SQLAlchemyError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        for name, text, kind, value in _FLEET:
            family_type = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            family = family_type(f"pbxcontrol_{name}", text, labels=["machine"])
            for m in found:
                if m.row is not None or kind == "gauge":
                    family.add_metric([str(m.machine)], float(value(m, m.row) if m.row else 0))
            yield family


class Metrics:
    """This process's figures and the scrape."""

    def __init__(self, engine: Engine, ids: list[int], takeover: float) -> None:
        self.multiprocess = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
        if self.multiprocess and values.ValueClass is values.MutexValue:
            # prometheus_client was imported before the directory was set (a test, a tool):
            # choose the value class again, before any metric is made.
            values.ValueClass = values.get_value_class()
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "pbxcontrol_http_requests",
            "API requests by function and envelope code",
            ["function", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "pbxcontrol_http_request_duration_seconds",
            "API request latency by function",
            ["function"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.streams = Gauge(
            "pbxcontrol_stream_subscribers",
            "open live streams (/api/stream/)",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.fleet = FleetCollector(engine, ids, takeover)
        if not self.multiprocess:
            self.registry.register(self.fleet)

    def observe(self, function: str, code: int, seconds: float) -> None:
        self.requests.labels(function, str(code)).inc()
        self.latency.labels(function).observe(seconds)

    def stream_count(self, count: int) -> None:
        self.streams.set(count)

    def scrape(self) -> bytes:
        if not self.multiprocess:
            return prometheus_client.generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.multiprocess)
        registry.register(self.fleet)
        return prometheus_client.generate_latest(registry)

    def mark_dead(self, pid: int) -> None:
        """A worker process ended: its live gauges (open streams) no longer count."""
        if self.multiprocess:
            multiprocess.mark_process_dead(pid, self.multiprocess)

    def route(self, app: bottle.Bottle, allow: tuple[Network, ...]) -> None:
        """GET /metrics on `app`, for clients in `allow`."""
        allowed = health.ops_only(allow)

        @app.get("/metrics")
        def metrics() -> bytes:
            allowed()
            bottle.response.content_type = prometheus_client.CONTENT_TYPE_LATEST
            bottle.response.set_header("Cache-Control", "no-store")
            return self.scrape()


def mount(
    app: bottle.Bottle,
    metrics: Metrics,
    engine: Engine,
    ids: list[int],
    takeover: float,
    allow: tuple[Network, ...] = LOOPBACK,
) -> None:
    """GET /health and GET /metrics on `app` (for the machines `ids`), for the clients in
    `allow` (`[http] ops_allow`)."""
    health.route(app, engine, ids, takeover, allow)
    metrics.route(app, allow)
