"""The status reader's Prometheus metrics: stores by state, time to ready, deliveries, watch restarts."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Mapping

__all__ = ["READY_BUCKETS", "StatusMetrics"]

#: Upper bounds (seconds) of the time-to-ready histogram: a store takes seconds to many minutes.
READY_BUCKETS = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)

HELP = {
    "storeops_stores": ("gauge", "Stores by lifecycle state, as last reported."),
    "storeops_store_time_to_ready_seconds": ("histogram", "From a store's change (or first sighting) to ready."),
    "storeops_status_transitions_total": ("counter", "Store state transitions reported, by state."),
    "storeops_status_deliveries_total": ("counter", "Report deliveries, by sink and result."),
    "storeops_status_watch_restarts_total": ("counter", "Application watches re-made, by reason."),
    "storeops_status_relists_total": ("counter", "Full lists of the store Applications."),
    "storeops_status_outbox": ("gauge", "Reports still to deliver."),
}

Labels = tuple[tuple[str, str], ...]


class StatusMetrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[Labels, float]] = defaultdict(lambda: defaultdict(float))
        self._ready: list[float] = [0.0] * (len(READY_BUCKETS) + 2)

    def count(self, name: str, amount: float = 1, **labels: str) -> None:
        with self._lock:
            self._counters[name][tuple(sorted(labels.items()))] += amount

    def value(self, name: str, **labels: str) -> float:
        with self._lock:
            return self._counters[name].get(tuple(sorted(labels.items())), 0.0)

    def observe_ready(self, seconds: float) -> None:
        with self._lock:
            for i, bound in enumerate(READY_BUCKETS):
                if seconds <= bound:
                    self._ready[i] += 1
            self._ready[-2] += 1
            self._ready[-1] += seconds

    def render(self, *, states: Mapping[str, int], outbox: int) -> str:
        """Prometheus text exposition; ``states`` counts stores by state (every state listed, even 0)."""
        name = "storeops_store_time_to_ready_seconds"
        lines: list[str] = []

        def head(metric: str) -> None:
            kind, text = HELP[metric]
            lines.extend((f"# HELP {metric} {text}", f"# TYPE {metric} {kind}"))

        head("storeops_stores")
        lines.extend(f'storeops_stores{{state="{state}"}} {count}' for state, count in sorted(states.items()))
        head(name)
        with self._lock:
            for bound, count in zip(READY_BUCKETS, self._ready, strict=False):
                lines.append(f'{name}_bucket{{le="{bound:g}"}} {count:g}')
            lines.append(f'{name}_bucket{{le="+Inf"}} {self._ready[-2]:g}')
            lines.append(f"{name}_count {self._ready[-2]:g}")
            lines.append(f"{name}_sum {self._ready[-1]:.3f}")
            for metric in sorted(self._counters):
                head(metric)
                for labels, value in sorted(self._counters[metric].items()):
                    text = ",".join(f'{k}="{v}"' for k, v in labels)
                    lines.append(f"{metric}{{{text}}} {value:g}" if text else f"{metric} {value:g}")
        head("storeops_status_outbox")
        lines.append(f"storeops_status_outbox {outbox}")
        return "\n".join(lines) + "\n"
