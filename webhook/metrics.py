"""Prometheus metrics: counters, histograms and gauges in one object, rendered in the text exposition format.

Each part of the service holds a :class:`Metrics` for its own families (:data:`SERVICE` for the
intake and HTTP side, :data:`STATUS` for the status reader), so ``/metrics`` can put both renders
one after the other without naming a family twice.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Mapping

#: Upper bounds (seconds) of the latency histograms' buckets.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Upper bounds (seconds) of the time-to-ready histogram: a store takes seconds to many minutes.
READY_BUCKETS = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
TIME_TO_READY = "storeops_store_time_to_ready_seconds"

#: Families of the intake service and its HTTP side: name -> (type, help).
SERVICE = {
    "storeops_http_requests_total": ("counter", "HTTP requests answered, by route and status code."),
    "storeops_http_request_seconds": ("histogram", "Time to answer an HTTP request."),
    "storeops_requests_accepted_total": ("counter", "Store requests durably queued, by source and action."),
    "storeops_requests_landed_total": ("counter", "Store requests whose change is in Git."),
    "storeops_requests_rejected_late_total": ("counter", "Queued requests Git no longer allowed when landing."),
    "storeops_publish_seconds": ("histogram", "Time one publish (apply, render, commit, push) took."),
    "storeops_pushes_total": ("counter", "Commits pushed to the remote."),
    "storeops_publish_requests_total": ("counter", "Requests carried by publishes."),
    "storeops_writer_failures_total": ("counter", "Writer passes that failed (the requests stay queued)."),
    "storeops_queue_requests": ("gauge", "Requests in the queue database, by status."),
}
#: Families of the status reader.
STATUS = {
    "storeops_stores": ("gauge", "Stores by lifecycle state, as last reported."),
    TIME_TO_READY: ("histogram", "From a store's change (or first sighting) to ready."),
    "storeops_status_transitions_total": ("counter", "Store state transitions reported, by state."),
    "storeops_status_deliveries_total": ("counter", "Report deliveries, by sink and result."),
    "storeops_status_watch_restarts_total": ("counter", "Application watches re-made, by reason."),
    "storeops_status_relists_total": ("counter", "Full lists of the store Applications."),
    "storeops_status_outbox": ("gauge", "Reports still to deliver."),
}
#: Histograms whose buckets are not :data:`BUCKETS`.
_BUCKETS_OF = {TIME_TO_READY: READY_BUCKETS}
#: Histograms without labels: shown from zero, as Prometheus clients do, before the first observation.
_UNLABELED = (TIME_TO_READY, "storeops_publish_seconds")

Labels = tuple[tuple[str, str], ...]


class Metrics:
    def __init__(self, families: Mapping[str, tuple[str, str]] = SERVICE) -> None:
        self.families = dict(families)
        self._lock = threading.Lock()
        self._counters: dict[str, dict[Labels, float]] = defaultdict(lambda: defaultdict(float))
        self._histograms: dict[str, dict[Labels, list[float]]] = defaultdict(dict)
        for name in _UNLABELED:
            if name in self.families:
                self._histograms[name][()] = [0.0] * (len(_BUCKETS_OF.get(name, BUCKETS)) + 2)

    def count(self, name: str, amount: float = 1, **labels: str) -> None:
        with self._lock:
            self._counters[name][tuple(sorted(labels.items()))] += amount

    def observe(self, name: str, seconds: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        buckets = _BUCKETS_OF.get(name, BUCKETS)
        with self._lock:
            # [count per bucket..., +Inf count, sum]
            values = self._histograms[name].setdefault(key, [0.0] * (len(buckets) + 2))
            for i, bound in enumerate(buckets):
                if seconds <= bound:
                    values[i] += 1
            values[len(buckets)] += 1
            values[len(buckets) + 1] += seconds

    def observe_publish(self, *, seconds: float, pushed: bool, requests: int) -> None:
        self.observe("storeops_publish_seconds", seconds)
        self.count("storeops_publish_requests_total", requests)
        if pushed:
            self.count("storeops_pushes_total")

    def observe_ready(self, seconds: float) -> None:
        self.observe(TIME_TO_READY, seconds)

    def value(self, name: str, **labels: str) -> float:
        with self._lock:
            return self._counters[name].get(tuple(sorted(labels.items())), 0.0)

    def render(self, *, gauges: Mapping[str, Mapping[Labels, float]] | None = None) -> str:
        """Every family of this object (with ``gauges``' current values), in Prometheus text."""
        gauges = gauges or {}
        lines: list[str] = []
        with self._lock:
            names = sorted(set(self.families) | set(self._counters) | set(self._histograms) | set(gauges))
            for name in names:
                kind, text = self.families.get(name, ("untyped", name))
                lines.append(f"# HELP {name} {text}")
                lines.append(f"# TYPE {name} {kind}")
                for labels, value in sorted(self._counters.get(name, {}).items()):
                    lines.append(f"{name}{_labels(labels)} {value:g}")
                for labels, value in sorted(gauges.get(name, {}).items()):
                    lines.append(f"{name}{_labels(labels)} {value:g}")
                buckets = _BUCKETS_OF.get(name, BUCKETS)
                for labels, values in sorted(self._histograms.get(name, {}).items()):
                    for bound, count in zip(buckets, values, strict=False):
                        lines.append(f"{name}_bucket{_labels((*labels, ('le', f'{bound:g}')))} {count:g}")
                    lines.append(f"{name}_bucket{_labels((*labels, ('le', '+Inf')))} {values[len(buckets)]:g}")
                    lines.append(f"{name}_count{_labels(labels)} {values[len(buckets)]:g}")
                    lines.append(f"{name}_sum{_labels(labels)} {values[len(buckets) + 1]:.6f}")
        return "\n".join(lines) + "\n"


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    escaped = (f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"' for k, v in labels)
    return "{" + ",".join(escaped) + "}"
