"""bench/fleet.py at N = 20 as a smoke test: the whole loop through the real Argo CD (kwok Pods), the
one-store changes, and the seeds' Helm way on the same API server, with every figure it prints."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.e2e


def test_the_fleet_benchmark_runs_at_twenty_stores() -> None:
    done = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "fleet.py"), "--stores", "20", "--small", "5",
                           "--timeout", "900", "--json"], capture_output=True, text=True, timeout=2400,
                          cwd=REPO_ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    figures = json.loads(done.stdout[done.stdout.index("{\n"):])
    print(json.dumps(figures, indent=1))
    burst = figures["burst"]
    assert burst["stores"] == 15 and 0 < burst["p50_seconds"] <= burst["p99_seconds"] <= burst["all_ready_seconds"]
    assert burst["generations"]["stores"] >= 15  # every new store's manifests were generated at least once
    assert burst["cpu_seconds"]["controller"] > 0 and burst["cpu_seconds"]["repo-server"] > 0
    assert figures["seeds_way"]["stores"] == 15 and figures["seeds_way"]["all_available_seconds"] > 0
    for key in ("change_at_small", "change_at_full"):
        change = figures[key]
        assert change["ready_seconds"] > 0 and change["generations"]["stores"] >= 1, change
    assert set(figures["ratios"]) == {"seeds_way_over_storeops_burst", "change_full_over_small",
                                      "storeops_cpu_share_of_argocd"}
