"""Prometheus metrics (prometheus-client) served at /metrics on the node's HTTP server.

Counted where they happen: C-STOREs (instances and bytes per calling AE, handling time, refusals by status;
:meth:`NodeMetrics.observe_store` wraps the SCP's handler), deliveries (the sender's ``on_delivery`` hook) and
finished analyses (per workflow, from the case watcher). Everything else is read at scrape time from the status
model (node/casestatus.py): cases by state, outbox depth and oldest undelivered item per destination, how long a
destination has been failing, free disk space of data_dir and the watermark. One registry per node, so several
nodes in one process (tests) do not mix.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from node.casestatus import CASE_STATES, CaseStatus, NodeStatus

__all__ = ["NodeMetrics", "CONTENT_TYPE"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
disable_created_metrics()  # no *_created series: they double the output and nobody here graphs them
_PREFIX = "livernode"


class _StatusCollector(Collector):
    """Gauges read from the status model at each scrape."""

    def __init__(self, provider: Callable[[], NodeStatus]) -> None:
        self._provider = provider

    def describe(self) -> list:
        """Nothing to describe up front: registering must not read the status (the node is not started yet)."""
        return []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        status = self._provider()
        now = time.time()
        cases = GaugeMetricFamily(f"{_PREFIX}_cases", "Cases by state", labels=["state"])
        counts = dict.fromkeys(CASE_STATES, 0)
        for c in status.cases:
            counts[c.state] = counts.get(c.state, 0) + 1
        for state, n in counts.items():
            cases.add_metric([state], n)
        yield cases
        yield GaugeMetricFamily(f"{_PREFIX}_identity_conflicts", "Open patient-identity conflicts (cases held)",
                                value=len(status.conflicts))
        depth = GaugeMetricFamily(f"{_PREFIX}_outbox_items", "Outbox items by destination and state",
                                  labels=["destination", "state"])
        oldest = GaugeMetricFamily(f"{_PREFIX}_outbox_oldest_unsent_age_seconds",
                                   "Age of the oldest output not yet delivered (0 when none)", labels=["destination"])
        failing = GaugeMetricFamily(f"{_PREFIX}_destination_failing_seconds",
                                    "How long the destination has failed without a success (0 when fine)",
                                    labels=["destination"])
        for d in status.destinations:
            for state, n in d.counts.items():
                depth.add_metric([d.name, state], n)
            oldest.add_metric([d.name], now - d.oldest_unsent if d.oldest_unsent else 0.0)
            failing.add_metric([d.name], now - d.failing_since if d.failing_since else 0.0)
        yield depth
        yield oldest
        yield failing
        yield GaugeMetricFamily(f"{_PREFIX}_unrouted_output_kinds", "Output kinds no destination takes",
                                value=len(status.unrouted_outputs))
        if status.disk is not None:
            yield GaugeMetricFamily(f"{_PREFIX}_data_dir_free_bytes", "Free space on the volume of data_dir",
                                    value=status.disk.free_bytes)
            yield GaugeMetricFamily(f"{_PREFIX}_data_dir_min_free_bytes",
                                    "Watermark ([node] min_free_disk_mb): below it C-STOREs are refused",
                                    value=status.disk.min_free_bytes)
            yield GaugeMetricFamily(f"{_PREFIX}_data_dir_low", "1 while free space is below the watermark",
                                    value=1 if status.disk.low else 0)


class NodeMetrics:
    """The node's metrics registry and the hooks that feed it."""

    def __init__(self, status_provider: Callable[[], NodeStatus]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.received_instances = Counter(f"{_PREFIX}_received_instances", "Instances stored (C-STORE success)",
                                          ["calling_ae"], registry=r)
        self.received_bytes = Counter(f"{_PREFIX}_received_bytes", "Bytes stored (Part 10 files as received)",
                                      ["calling_ae"], registry=r)
        self.cstore_seconds = Histogram(
            f"{_PREFIX}_cstore_handling_seconds", "Time from the end of a C-STORE's data to its response",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0), registry=r)
        self.refusals = Counter(f"{_PREFIX}_cstore_refusals", "C-STOREs refused, by DIMSE status", ["status"],
                                registry=r)
        self.analysis_seconds = Histogram(
            f"{_PREFIX}_analysis_seconds", "Duration of finished analyses per workflow", ["workflow"],
            buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800), registry=r)
        self.analyses = Counter(f"{_PREFIX}_analyses", "Finished analyses per workflow and outcome",
                                ["workflow", "outcome"], registry=r)
        self.deliveries = Counter(f"{_PREFIX}_deliveries", "Outputs delivered per destination", ["destination"],
                                  registry=r)
        self.delivery_failures = Counter(f"{_PREFIX}_delivery_failures", "Failed delivery attempts per destination",
                                         ["destination"], registry=r)
        r.register(_StatusCollector(status_provider))

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self.registry)

    # ------------------------------------------------------------------ hooks
    def observe_store(self, handler: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """Wrap the SCP's C-STORE handler: time it, count bytes and instances per calling AE, refusals by status."""
        def observed(event: Any) -> Any:
            t0 = time.perf_counter()
            try:
                size = os.path.getsize(event.dataset_path)
            except (OSError, AttributeError, TypeError, ValueError):
                size = 0
            status = handler(event)
            code = status if isinstance(status, int) else int(getattr(status, "Status", 0xC000))
            if code == 0:
                ae = str(event.assoc.requestor.ae_title).strip()
                self.received_instances.labels(ae).inc()
                self.received_bytes.labels(ae).inc(size)
            else:
                self.refusals.labels(f"0x{code:04X}").inc()
            self.cstore_seconds.observe(time.perf_counter() - t0)
            return status
        return observed

    def on_delivery(self, destination: str, ok: bool) -> None:
        (self.deliveries if ok else self.delivery_failures).labels(destination).inc()

    def analysis_finished(self, case: CaseStatus) -> None:
        """A case finished a run (done or failed): observe each workflow that ran."""
        for w in case.workflows.values():
            if w.state in ("done", "failed"):
                self.analyses.labels(w.name, w.state).inc()
                if w.seconds is not None:
                    self.analysis_seconds.labels(w.name).observe(w.seconds)
