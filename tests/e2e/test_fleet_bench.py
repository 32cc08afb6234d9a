"""The fleet benchmark (bench/fleet.py) at 20 stores: the whole loop through the real Argo CD runs, and
what it reports holds together. Its figures are read by hand at 100 and 1,000 stores (README); here
nothing is asserted about time, only what a broken loop or a broken measurement would change: every
store of the burst ready, one manifest generation for a one-store change, the seeds' way timed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]
STORES, SMALL = 20, 5


def test_the_fleet_benchmark_runs_at_twenty_stores() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "fleet.py"), "--stores", str(STORES),
                           "--small", str(SMALL), "--timeout", "900", "--json"],
                          capture_output=True, text=True, timeout=1800, cwd=ROOT, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-5000:]
    figures = json.loads(done.stdout)
    print(json.dumps(figures, indent=1))
    assert figures["small_fleet"]["stores"] == SMALL
    burst = figures["burst"]
    assert burst["stores"] == STORES - SMALL
    assert 0 < burst["p50_seconds"] <= burst["p99_seconds"] <= burst["all_ready_seconds"]
    # Every new store's Application rendered in the burst (at 1,000 stores a few were rendered twice); the root too.
    assert burst["generations"]["stores"] >= STORES - SMALL
    assert burst["generations"]["root"] >= 1
    assert burst["cpu_seconds"]["controller"] > 0 and burst["cpu_seconds"]["storeops"] > 0
    assert burst["cluster_cpu_seconds"]["apiserver"] > 0 and 0 < burst["machine_busy"] <= 1
    for key in ("change_at_small", "change_at_full"):
        change = figures[key]
        assert change["ready_seconds"] > 0
        # The changed store's manifests are generated again, and no other store's.
        assert change["generations"] == {"stores": 1, "root": 1}, (key, change)
    seeds = figures["seeds_way"]
    assert seeds["stores"] == STORES - SMALL and seeds["all_available_seconds"] > 0
    assert seeds["helm_cpu_seconds"] > 0 and seeds["cluster_cpu_seconds"]["apiserver"] > 0
    assert set(figures["ratios"]) == {"change_full_over_small", "storeops_cpu_share_of_argocd",
                                      "seeds_way_over_storeops_burst"}
    assert figures["argocd"]["argocd-application-controller"]
