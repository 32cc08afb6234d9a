"""Benchmark: the whole loop for a fleet, through the real Argo CD, against the seeds' way (Helm per store).

Run:  python3 bench/fleet.py [--stores 100] [--json]      (make bench-fleet STORES=100)

Starts its own control plane with Argo CD (kwok runs the Pods: no store process starts, so what is
measured is storeops, Git, Argo CD and the API server) and ``storeops serve`` with the status reader,
on a copy of the example data whose local cluster is sized for the fleet. Then, in one run:

1. a one-store change at a small fleet (the example stores plus --small new ones): request -> ready,
   once Argo CD's controller is at rest (under a quarter of a core over 5 s; the wait is reported);
2. a burst of new WooCommerce stores up to --stores, all requested at once through the API (16
   clients): time until every one is ``ready``, and each store's request -> ready (p50, p99);
3. the same one-store change with the whole fleet there, again once the controller is at rest;
4. the seeds' way, on the same API server: ``helm upgrade --install --wait --timeout 10m`` of the
   same number of stores (Helm 3's ``--wait``, which is Helm 4's ``--wait=legacy``) with the same chart
   and values (each in its own namespace, the chart's own Namespace off since Helm creates it), five
   at a time (the seeds' semaphore), until all are Available.

For Argo CD it reports the application-controller's and the repo-server's CPU seconds (from /proc)
and peak RSS (VmHWM) over each phase, and the manifest generations the repo-server performed: its
JSON log records ``setting manifests cache`` (one per generation, with the Application's name; a
cached manifest moved to a new commit outside an Application's ``manifest-generate-paths`` logs
``manifest cache moved`` instead). The root Application's (``storeops-<cluster>``) are counted apart
from the stores' (``store-<id>``). storeops' own CPU seconds
are its serve process's.

Argo CD's settings are options, printed with the figures: the controller's status and operation
processors and resync period (``--app-resync``; storeops asks Argo CD to refresh the Applications a push
touched, so polling only catches what happened outside storeops), the repo-server's parallelism limit,
the ``ignoreResourceUpdates`` customizations (``--no-ignore-status-updates`` leaves them out), and any
other controller flag (``--controller-flag``, e.g. the work queue's rate limiter). argocd-cm also gets the
``resource.exclusions`` Argo CD's install manifests ship. The defaults are the guidance in
docs/install.md; ``--argocd harness`` runs the test harness's settings instead (10 s polling, 4 + 4
processors) to compare. ``--no-seeds`` leaves out the Helm run (for comparing Argo CD's settings, which do
not change it). A burst not all ready within ``--timeout`` ends the run with what it measured (exit 1).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml

from generator import models, operations, publishing, rendering
from harness import argocd, components, demo, examples
from harness import stack as harness_stack

CLIENTS = 16
SEEDS_CONCURRENCY = 5
#: Argo CD's settings for a fleet (docs/install.md, "Argo CD for a large fleet").
TUNED = {"status_processors": 20, "operation_processors": 10, "app_resync": 600, "repo_parallelism": 0}
#: argocd-cm: a change of only an object's status (a Deployment's replicas counted, a PVC bound) refreshes its
#: Application only when its health changes; and a store Application's own bookkeeping (its status, the
#: operation Argo CD sets and clears, the refresh annotation storeops sets and Argo CD removes) does not
#: refresh the root Application that tracks it, whose every refresh compares all the fleet's Applications.
IGNORE_STATUS_UPDATES = {
    "resource.customizations.ignoreResourceUpdates.all": "jsonPointers:\n- /status\n",
    "resource.customizations.ignoreResourceUpdates.argoproj.io_Application": (
        "jsonPointers:\n- /status\n- /operation\n- /metadata/annotations/argocd.argoproj.io~1refresh\n"),
}
#: The repo-server's record of a manifest generation (one per generation; "manifest cache miss" comes twice).
GENERATED = "setting manifests cache"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_ticks() -> tuple[float, float]:
    """All cores' busy and total clock ticks since boot (/proc/stat)."""
    fields = [float(f) for f in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return sum(fields) - idle, sum(fields)


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Meter:
    """CPU seconds of Argo CD's controller and repo-server and of storeops serve, and the repo-server's
    manifest generations, between ``start`` and ``stop``."""

    #: The cluster's own processes, whose CPU is reported too (what the same work costs the API server).
    CLUSTER = {"kube-apiserver": "apiserver", "etcd": "etcd", "kube-controller-manager": "controller-manager",
               "kwok": "kwok"}

    def __init__(self, running: harness_stack.Stack, service_pid: int) -> None:
        self.pids = {"controller": running.processes["argocd-application-controller"].pid,
                     "repo-server": running.processes["argocd-repo-server"].pid, "storeops": service_pid}
        self.cluster = {short: running.processes[name].pid for name, short in self.CLUSTER.items()}
        self.log = running.processes["argocd-repo-server"].log_path
        self.cpu: dict[str, float] = {}
        self.machine = (0.0, 0.0)
        self.offset = 0

    def start(self) -> None:
        self.cpu = {name: cpu_seconds(pid) for name, pid in (self.pids | self.cluster).items()}
        self.machine = machine_ticks()
        self.offset = self.log.stat().st_size

    def stop(self) -> dict[str, Any]:
        spent = {name: round(cpu_seconds(pid) - self.cpu[name], 2) for name, pid in (self.pids | self.cluster).items()}
        used, cluster = ({name: spent[name] for name in names} for names in (self.pids, self.cluster))
        busy, total = (now - then for now, then in zip(machine_ticks(), self.machine, strict=True))
        generated: list[str] = []
        with self.log.open("rb") as f:
            f.seek(self.offset)
            for line in f.read().decode(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
                    if isinstance(record, dict) and record.get("msg") == GENERATED:
                        generated.append(str(record.get("application") or ""))
        return {"cpu_seconds": used, "cluster_cpu_seconds": cluster,
                "machine_busy": round(busy / max(total, 1), 2),
                "peak_rss_mib": {n: round(peak_rss_mib(p)) for n, p in self.pids.items()},
                "generations": {"stores": sum(1 for a in generated if a.startswith("store-")),
                                "root": sum(1 for a in generated if a.startswith("storeops-"))}}


def entry(store_id: str, **extra: object) -> dict[str, object]:
    return {"id": store_id, "name": f"Fleet {store_id}", "engine": "woocommerce", "plan": "small",
            "cluster": demo.CLUSTER, "owner": {"name": "Fleet Owner", "email": f"owner@{store_id}.example"}, **extra}


class Unfinished(Exception):
    """A burst not all ready within its timeout; carries what was measured."""

    def __init__(self, figures: dict[str, Any]) -> None:
        super().__init__(f"only {figures['ready']} of {figures['stores']} stores ready after "
                         f"{figures['timeout_seconds']:.0f}s")
        self.figures = figures


def ready_ids(loop: demo.Loop) -> set[str]:
    out: set[str] = set()
    after = ""
    while True:
        status, page = loop.call("GET", f"/v1/stores?status=ready&limit=1000{'&after=' + after if after else ''}")
        assert status == 200, page
        out.update(s["id"] for s in page["stores"])
        after = page.get("next") or ""
        if not after:
            return out


def burst(loop: demo.Loop, ids: list[str], timeout: float) -> dict[str, Any]:
    """Request every store at once; wait until all are ready; per-store request -> ready."""
    asked: dict[str, float] = {}
    began = time.monotonic()

    def ask(store_id: str) -> None:
        status, answer = loop.call("POST", "/v1/stores", entry(store_id))
        assert status == 202, answer
        asked[store_id] = time.monotonic()

    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(ask, ids))
    accepted = time.monotonic() - began
    ready: dict[str, float] = {}
    deadline = began + timeout
    while len(ready) < len(ids) and time.monotonic() < deadline:
        now = time.monotonic()
        for store_id in ready_ids(loop) & set(ids):
            ready.setdefault(store_id, now)
        time.sleep(1)
    if len(ready) < len(ids):
        raise Unfinished({"stores": len(ids), "ready": len(ready), "timeout_seconds": timeout,
                          "accepted_seconds": round(accepted, 1)})
    each = sorted(ready[s] - asked[s] for s in ids)
    return {"stores": len(ids), "accepted_seconds": round(accepted, 1),
            "all_ready_seconds": round(max(ready.values()) - began, 1),
            "p50_seconds": round(statistics.median(each), 1),
            "p99_seconds": round(each[min(len(each) - 1, int(len(each) * 0.99))], 1)}


def settle(meter: Meter, *, idle: float = 0.25, window: float = 5.0, timeout: float = 600.0) -> float:
    """Wait until Argo CD's controller uses less than ``idle`` of a core over ``window`` seconds (the fleet at
    rest, what a change meets in steady state); the seconds that took."""
    began = time.monotonic()
    pid = meter.pids["controller"]
    while time.monotonic() - began < timeout:
        before = cpu_seconds(pid)
        time.sleep(window)
        if cpu_seconds(pid) - before < idle * window:
            break
    return round(time.monotonic() - began, 1)


def one_change(loop: demo.Loop, store_id: str, meter: Meter) -> dict[str, Any]:
    """Suspend one store (a change of its values), once Argo CD is at rest: request -> ready at the change, and
    what it cost."""
    settled = settle(meter)
    status, view = loop.call("GET", f"/v1/stores/{store_id}")
    before = str((view.get("deployment") or {}).get("revision") or "")
    meter.start()
    began = time.monotonic()
    status, answer = loop.call("PATCH", f"/v1/stores/{store_id}", {"state": "suspended"})
    assert status == 202, answer
    events = loop.follow(store_id, until=("ready", "failed", "degraded"), since=began, timeout=600,
                         after_revision=before)
    assert events[-1]["status"] == "ready", events[-1]
    seconds = time.monotonic() - began
    time.sleep(5)  # what Argo CD does for the commit beyond this store shows in the next seconds
    return {"ready_seconds": round(seconds, 1), "settled_seconds": settled, **meter.stop()}


def seeds_way(running: harness_stack.Stack, repo: Path, count: int, work: Path) -> dict[str, Any]:
    """helm upgrade --install --wait per store, five at a time, with the generator's values."""
    fleet = operations.load(repo)
    cluster, plan = fleet.clusters[demo.CLUSTER][0], fleet.plans["small"]
    values_dir = work / "helm-values"
    values_dir.mkdir()
    stores = []
    for i in range(count):
        data = entry(f"helm-{i}-{uuid.uuid4().hex[:4]}")
        store = models.Store.from_data(data)
        values = yaml.safe_load(rendering.render_store(rendering.Target(store, cluster, plan))[
            rendering.values_path(store.cluster, store.id)])
        values.setdefault("namespace", {})["create"] = False  # Helm makes the namespace (--create-namespace)
        (values_dir / f"{store.id}.yaml").write_text(yaml.safe_dump(values))
        stores.append(store)

    def install(store: models.Store) -> None:
        done = subprocess.run(
            [str(running.helm), "upgrade", "--install", store.id, str(repo / "templates" / "woocommerce"),
             "--namespace", store.namespace, "--create-namespace", "--values", str(values_dir / f"{store.id}.yaml"),
             "--wait=legacy", "--timeout", "10m", "--kubeconfig", str(running.kubeconfig)],
            capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"helm install of {store.id} failed: {done.stderr.strip()[-800:]}")

    began = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(SEEDS_CONCURRENCY) as pool:
        list(pool.map(install, stores))
    return {"stores": count, "all_available_seconds": round(time.monotonic() - began, 1),
            "concurrency": SEEDS_CONCURRENCY}


def profile_controller(running: harness_stack.Stack, path: Path, *, delay: float, seconds: int) -> threading.Thread:
    """In the background: ``delay`` seconds from now, a CPU profile of Argo CD's application-controller over
    ``seconds`` seconds (Go's pprof, on its metrics port), written to ``path`` (read with ``go tool pprof``)."""
    components.profiler_switch(running.state).write_text("true")
    url = f"http://127.0.0.1:{running.ports['controller-metrics']}/debug/pprof/profile?seconds={seconds}"

    def take() -> None:
        time.sleep(delay)
        with urllib.request.urlopen(url, timeout=seconds + 60) as answer:
            path.write_bytes(answer.read())
        print(f"controller CPU profile ({seconds}s from {delay:.0f}s into the burst): {path}")

    thread = threading.Thread(target=take, daemon=True)
    thread.start()
    return thread


def argocd_flags(args: argparse.Namespace) -> dict[str, list[str]]:
    """The flags for Argo CD's controller and repo-server the options ask for."""
    return {
        "argocd-application-controller": [f"--status-processors={args.status_processors}",
                                          f"--operation-processors={args.operation_processors}",
                                          f"--app-resync={args.app_resync}", *args.controller_flag],
        "argocd-repo-server": [f"--parallelismlimit={args.repo_parallelism}"],
    }


def measure(args: argparse.Namespace, running: harness_stack.Stack, loop: demo.Loop, work: Path) -> dict[str, Any]:
    """The run: a small fleet and its one-store change, the burst, the change at the full fleet, the seeds' way."""
    results: dict[str, Any] = {}
    source = examples.example_repo(work / "source", capacity=args.stores + 20)
    publishing.seed_remote(loop.remote, source, "main")
    loop.extra_env.update({"STOREOPS_RATE": "100000", "STOREOPS_BURST": "100000"})
    loop.prepare()
    loop.start_service()
    assert loop.service is not None
    meter = Meter(running, loop.service.pid)
    small = [f"small-{i}-{uuid.uuid4().hex[:4]}" for i in range(args.small)]
    results["small_fleet"] = burst(loop, small, args.timeout)
    results["change_at_small"] = one_change(loop, small[0], meter)
    big = [f"fleet-{i}-{uuid.uuid4().hex[:4]}" for i in range(args.stores - args.small)]
    meter.start()
    if args.profile:
        profile_controller(running, args.profile.resolve(), delay=args.profile_delay, seconds=args.profile_seconds)
    try:
        results["burst"] = {**burst(loop, big, args.timeout), **meter.stop()}
    except Unfinished as e:
        results["burst"] = {**e.figures, **meter.stop()}
        results["unfinished"] = str(e)
        return results
    print(f"burst: {json.dumps(results['burst'])}")  # what a long run has measured so far, as it goes
    results["change_at_full"] = one_change(loop, small[1], meter)
    print(f"change at the full fleet: {json.dumps(results['change_at_full'])}")
    if not args.no_seeds:
        meter.start()
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        seeds = seeds_way(running, source, len(big), work)
        used = meter.stop()  # what Helm's installs cost the API server (Argo CD is at rest by then)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        helm_cpu = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
        results["seeds_way"] = {**seeds, "helm_cpu_seconds": round(helm_cpu, 2),
                                "cluster_cpu_seconds": used["cluster_cpu_seconds"],
                                "machine_busy": used["machine_busy"]}
    argo = results["burst"]["cpu_seconds"]
    results["ratios"] = {
        "change_full_over_small": round(results["change_at_full"]["ready_seconds"]
                                        / results["change_at_small"]["ready_seconds"], 2),
        "storeops_cpu_share_of_argocd": round(argo["storeops"] / max(argo["controller"] + argo["repo-server"], 0.01),
                                              3),
    }
    if "seeds_way" in results:
        results["ratios"]["seeds_way_over_storeops_burst"] = round(
            results["seeds_way"]["all_available_seconds"] / results["burst"]["all_ready_seconds"], 2)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stores", type=int, default=100, help="the fleet's size after the burst (default 100)")
    parser.add_argument("--small", type=int, default=10, help="new stores before the first one-store change")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds the burst may take to be ready")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--argocd", choices=("tuned", "harness"), default="tuned",
                        help="Argo CD's settings: the options below (tuned) or the test harness's (10 s polling)")
    parser.add_argument("--status-processors", type=int, default=TUNED["status_processors"])
    parser.add_argument("--operation-processors", type=int, default=TUNED["operation_processors"])
    parser.add_argument("--app-resync", type=int, default=TUNED["app_resync"],
                        help="seconds between the controller's polls of every Application")
    parser.add_argument("--repo-parallelism", type=int, default=TUNED["repo_parallelism"],
                        help="the repo-server's concurrent manifest generations (0: no limit)")
    parser.add_argument("--ignore-status-updates", action=argparse.BooleanOptionalAction, default=True,
                        help="refresh an Application on a status-only change of its objects only when health changes")
    parser.add_argument("--controller-flag", action="append", default=[], metavar="FLAG",
                        help="another flag for the application-controller (repeatable), e.g. --wq-cooldown-ns=10s")
    parser.add_argument("--argocd-cm", action="append", default=[], metavar="KEY=VALUE",
                        help="another argocd-cm setting (repeatable; \\n for a new line), "
                             "e.g. 'resource.compareoptions=ignoreResourceStatusField: all'")
    parser.add_argument("--no-seeds", action="store_true", help="leave out the seeds' way (Helm per store)")
    parser.add_argument("--profile", type=Path, metavar="FILE",
                        help="write a CPU profile of Argo CD's controller during the burst to FILE (go tool pprof)")
    parser.add_argument("--profile-delay", type=float, default=20, help="seconds into the burst the profile starts")
    parser.add_argument("--profile-seconds", type=int, default=60, help="the profile's length in seconds")
    parser.add_argument("--keep", action="store_true", help="keep the run's folder (the components' logs) afterwards")
    args = parser.parse_args(argv)
    if args.stores <= args.small:
        parser.error("--stores must be larger than --small")
    work = Path(tempfile.mkdtemp(prefix="storeops-fleet-"))
    tuned = args.argocd == "tuned"
    flags = argocd_flags(args) if tuned else {}
    settings = {"resource.exclusions": argocd.RESOURCE_EXCLUSIONS} if tuned else {}
    if tuned and args.ignore_status_updates:
        settings |= IGNORE_STATUS_UPDATES
    for setting in args.argocd_cm:
        key, sep, value = setting.partition("=")
        if not sep:
            parser.error(f"--argocd-cm {setting!r}: expected KEY=VALUE")
        settings[key] = value.replace("\\n", "\n")
    running = harness_stack.start(work / "stack", full=True, tie_to_parent=True, argocd_defaults=tuned,
                                  argocd_flags=flags, argocd_settings=settings)
    loop = demo.Loop(stack=running, work=work)
    results: dict[str, Any] = {"stores": args.stores,
                               "argocd": {**flags, "argocd-cm": settings} if tuned else "harness"}
    try:
        # The loop's progress lines go to stderr: stdout is the figures' (JSON with --json).
        with contextlib.redirect_stdout(sys.stderr):
            results.update(measure(args, running, loop, work))
    finally:
        loop.stop_service()
        running.stop()
        if args.keep:
            print(f"the run's folder (logs under stack/logs): {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    if args.json or "unfinished" in results:
        print(json.dumps(results, indent=2))
        return 1 if "unfinished" in results else 0
    else:
        b, r = results["burst"], results["ratios"]
        print(f"Argo CD: {results['argocd']}")
        print(f"burst of {b['stores']} new stores (fleet {args.stores}): all ready in {b['all_ready_seconds']}s, "
              f"request -> ready p50 {b['p50_seconds']}s p99 {b['p99_seconds']}s")
        print(f"  Argo CD CPU: controller {b['cpu_seconds']['controller']}s, repo-server "
              f"{b['cpu_seconds']['repo-server']}s; peak RSS {b['peak_rss_mib']}; manifest generations "
              f"{b['generations']}; storeops CPU {b['cpu_seconds']['storeops']}s")
        if "seeds_way" in results:
            s = results["seeds_way"]
            print(f"the seeds' way (helm --wait, {s['concurrency']} at a time): {s['stores']} stores Available in "
                  f"{s['all_available_seconds']}s: {r['seeds_way_over_storeops_burst']}x storeops' burst")
        for key in ("change_at_small", "change_at_full"):
            c = results[key]
            print(f"one-store change ({key.removeprefix('change_at_')} fleet): ready in {c['ready_seconds']}s, "
                  f"manifest generations {c['generations']}")
        print(f"ratios: {r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
