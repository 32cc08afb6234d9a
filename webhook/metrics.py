"""Prometheus metrics, kept in one object the app holds and rendered in the text exposition format."""

from __future__ import annotations

import threading
from collections import defaultdict

#: Upper bounds (seconds) of the latency histograms' buckets.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

HELP = {
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

Labels = tuple[tuple[str, str], ...]


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[Labels, float]] = defaultdict(lambda: defaultdict(float))
        self._histograms: dict[str, dict[Labels, list[float]]] = defaultdict(dict)

    def count(self, name: str, amount: float = 1, **labels: str) -> None:
        with self._lock:
            self._counters[name][tuple(sorted(labels.items()))] += amount

    def observe(self, name: str, seconds: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            # [count per bucket..., +Inf count, sum]
            values = self._histograms[name].setdefault(key, [0.0] * (len(BUCKETS) + 2))
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    values[i] += 1
            values[len(BUCKETS)] += 1
            values[len(BUCKETS) + 1] += seconds

    def observe_publish(self, *, seconds: float, pushed: bool, requests: int) -> None:
        self.observe("storeops_publish_seconds", seconds)
        self.count("storeops_publish_requests_total", requests)
        if pushed:
            self.count("storeops_pushes_total")

    def value(self, name: str, **labels: str) -> float:
        with self._lock:
            return self._counters[name].get(tuple(sorted(labels.items())), 0.0)

    def render(self, *, gauges: dict[str, dict[Labels, float]]) -> str:
        lines: list[str] = []
        with self._lock:
            names = sorted(set(HELP) | set(self._counters) | set(self._histograms) | set(gauges))
            for name in names:
                kind, text = HELP.get(name, ("untyped", name))
                lines.append(f"# HELP {name} {text}")
                lines.append(f"# TYPE {name} {kind}")
                for labels, value in sorted(self._counters.get(name, {}).items()):
                    lines.append(f"{name}{_labels(labels)} {value:g}")
                for labels, value in sorted(gauges.get(name, {}).items()):
                    lines.append(f"{name}{_labels(labels)} {value:g}")
                for labels, values in sorted(self._histograms.get(name, {}).items()):
                    for bound, count in zip(BUCKETS, values, strict=False):
                        lines.append(f"{name}_bucket{_labels((*labels, ('le', f'{bound:g}')))} {count:g}")
                    lines.append(f"{name}_bucket{_labels((*labels, ('le', '+Inf')))} {values[len(BUCKETS)]:g}")
                    lines.append(f"{name}_count{_labels(labels)} {values[len(BUCKETS)]:g}")
                    lines.append(f"{name}_sum{_labels(labels)} {values[len(BUCKETS) + 1]:.6f}")
        return "\n".join(lines) + "\n"


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    escaped = (f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"' for k, v in labels)
    return "{" + ",".join(escaped) + "}"
