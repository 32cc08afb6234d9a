"""Benchmark: the status reader (one list + watch) against a per-store poller (GET each store every 10 s).

Run:  python3 bench/status.py [--stores 10000] [--window 60]

Starts its own etcd + kube-apiserver (watch cache on, as in a real cluster) from harness/, installs
the Application CRD and creates the stores' Applications (Synced + Healthy) with threads. Then, in
turn and alone on the machine, each contender runs in its own process (so its memory is its own)
and reports to its own real HTTP callback receiver through the same mapping and reporting code:

1. the reader with a small fleet (--small stores), to show its requests do not grow with the fleet;
2. the reader with the whole fleet;
3. the poller with the whole fleet.

During each steady-state window the driver changes --rate stores per second (Healthy -> Degraded)
and measures, per change, the time from the PATCH to the callback arriving. API requests are
counted in the contender's process by wrapping the kubernetes client's urllib3 ``request`` (every
HTTP request it sends: list pages, watches, GETs). Memory is the contender process's RSS.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import multiprocessing
import multiprocessing.connection
import random
import statistics
import sys
import tempfile
import threading
import time
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kubernetes import client

from generator.destinations import Allowed
from harness import applications, receivers
from harness import stack as harness_stack
from webhook.metrics import STATUS, Metrics
from webhook.settings import StatusSettings
from webhook.status import reader as statusreader
from webhook.status.callbacks import Callbacks, CallbackSink
from webhook.status.ledger import Ledger
from webhook.status.reporting import Deliverer, Reporter
from webhook.status.revisions import Revisions
from webhook.status.sinks import MetricsSink, WakeSink
from webhook.status.watching import GROUP, PLURAL, VERSION

NAMESPACE = "bench"
POLL_PERIOD = 10.0
POLL_THREADS = 32


# --- the contenders, each in its own process ----------------------------------------------------------


def _rss() -> tuple[float, float]:
    """(current, peak) resident memory of this process in MiB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def _counting(api: client.ApiClient) -> Callable[[], int]:
    """Count every HTTP request the client sends; returns a reader of the count."""
    pool = api.rest_client.pool_manager
    original = pool.request
    count = [0]
    lock = threading.Lock()

    def request(*args: Any, **kwargs: Any) -> Any:
        with lock:
            count[0] += 1
        return original(*args, **kwargs)

    patched: Any = pool
    patched.request = request  # counts, then sends as before
    return lambda: count[0]


def _serve(conn: multiprocessing.connection.Connection, requests: Callable[[], int]) -> None:
    """Answer the driver's questions until it says stop."""
    while True:
        command = conn.recv()
        if command == "stop":
            return
        current, peak = _rss()
        conn.send({"requests": requests(), "rss_mib": current, "peak_mib": peak, "at": time.monotonic()})


def reader_process(conn: multiprocessing.connection.Connection, kubeconfig: str, state: str, callback: str,
                   watch_timeout: int) -> None:
    settings = StatusSettings(kubeconfig=kubeconfig, namespace=NAMESPACE, ledger=Path(state) / "reader.sqlite3",
                              workdir=Path(state) / "no-clone", callback_url=callback, callback_allow="127.0.0.1",
                              callback_secret="bench",
                              watch_timeout=watch_timeout)
    reader = statusreader.build(settings)
    requests = _counting(reader.api)
    stop = threading.Event()
    reader.start(stop=stop)
    _serve(conn, requests)
    stop.set()
    reader.join()
    reader.close()


def poller_process(conn: multiprocessing.connection.Connection, kubeconfig: str, state: str, callback: str,
                   names: list[str]) -> None:
    """The design the reader replaces: GET every store's Application every 10 s, same mapping and reporting."""
    settings = StatusSettings(kubeconfig=kubeconfig)
    api = statusreader.api_client(settings)
    api.configuration.connection_pool_maxsize = POLL_THREADS
    api.rest_client.pool_manager.connection_pool_kw["maxsize"] = POLL_THREADS
    requests = _counting(api)
    custom = client.CustomObjectsApi(api)
    ledger = Ledger(Path(state) / "poller.sqlite3")
    metrics = Metrics(STATUS)
    sink = CallbackSink(callbacks=Callbacks(secret="bench", allowed=Allowed.parse("127.0.0.1")), url=callback)
    deliverer = Deliverer(ledger=ledger, metrics=metrics, sinks=[sink])
    reporter = Reporter(ledger=ledger, metrics=metrics, sinks=[sink, MetricsSink(metrics), WakeSink(deliverer.wake)])
    fleet = statusreader.Fleet(reporter=reporter, revisions=Revisions(Path(state) / "no-clone"), stuck_after=900)
    stop = threading.Event()

    def poll(share: list[tuple[float, str]]) -> None:
        began = time.monotonic()
        cycle = 0
        while not stop.is_set():
            for offset, name in share:
                delay = began + cycle * POLL_PERIOD + offset - time.monotonic()
                if delay > 0 and stop.wait(delay):
                    return
                try:
                    response = custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name,
                                                                   _preload_content=False)
                    fleet.upsert(json.loads(typing.cast(Any, response).data))
                except client.ApiException as e:
                    if e.status != 404:
                        raise
            cycle += 1

    slots = [(i * POLL_PERIOD / len(names), name) for i, name in enumerate(names)]
    threads = [threading.Thread(target=poll, args=(slots[i::POLL_THREADS],), daemon=True)
               for i in range(POLL_THREADS)]
    threads.append(threading.Thread(target=deliverer.run, kwargs={"stop": stop}, daemon=True))
    for thread in threads:
        thread.start()
    _serve(conn, requests)
    stop.set()
    deliverer.wake.set()
    for thread in threads:
        thread.join(15)
    ledger.close()


# --- the driver ---------------------------------------------------------------------------------------


def create_fleet(custom: client.CustomObjectsApi, ids: list[str], *, threads: int = 16) -> float:
    began = time.monotonic()

    def create(store_id: str) -> None:
        body = applications.application(store_id, NAMESPACE)
        body["status"] = applications.argo_status(sync="Synced", health="Healthy", phase="Succeeded")
        custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, body)

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for future in concurrent.futures.as_completed([pool.submit(create, i) for i in ids]):
            future.result()
    return time.monotonic() - began


@contextlib.contextmanager
def contender(target: Callable[..., None], *args: Any) -> Iterator[Callable[[], dict[str, float]]]:
    parent, child = multiprocessing.get_context("spawn").Pipe()
    process = multiprocessing.get_context("spawn").Process(target=target, args=(child, *args), daemon=True)
    process.start()

    def ask() -> dict[str, float]:
        parent.send("stats")
        answer: dict[str, float] = parent.recv()
        return answer

    try:
        yield ask
    finally:
        parent.send("stop")
        process.join(30)
        if process.is_alive():
            process.kill()


def wait_reports(receiver: receivers.CallbackReceiver, count: int, *, timeout: float, what: str) -> float:
    began = time.monotonic()
    applications.wait_until(f"{what}: {count} initial reports", lambda: len(receiver.all()) >= count, timeout=timeout)
    return time.monotonic() - began


def measure(name: str, ask: Callable[[], dict[str, float]], receiver: receivers.CallbackReceiver,
            custom: client.CustomObjectsApi, targets: list[str], *, window: float, rate: float) -> dict[str, Any]:
    """Change ``rate`` stores per second for ``window`` seconds; requests, latency and memory meanwhile."""
    changed: dict[str, float] = {}
    degraded = applications.argo_status(sync="Synced", health="Degraded", phase="Succeeded",
                                   health_message="CrashLoopBackOff")
    start = ask()
    began = time.monotonic()
    for i, store_id in enumerate(targets[: int(window * rate)]):
        delay = began + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        changed[store_id] = time.monotonic()
        applications.set_status(custom, NAMESPACE, store_id, degraded)
    time.sleep(max(0.0, began + window - time.monotonic()))
    end = ask()
    elapsed = end["at"] - start["at"]
    # Give the slowest reports time to land (the poller's may take a whole period).
    applications.wait_until(f"{name}: reports of every change", lambda: all(
        receiver.statuses(s)[-1:] == ["degraded"] for s in changed), timeout=POLL_PERIOD * 6)
    arrived = {r.payload["store_id"]: r.at for r in receiver.all() if r.payload["status"] == "degraded"}
    latencies = sorted(arrived[s] - t for s, t in changed.items())
    return {"name": name, "requests_per_minute": (end["requests"] - start["requests"]) * 60 / elapsed,
            "p50": statistics.median(latencies), "p99": latencies[min(len(latencies) - 1,
                                                                       int(len(latencies) * 0.99))],
            "changes": len(latencies), "rss_mib": end["rss_mib"], "peak_mib": end["peak_mib"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stores", type=int, default=10_000)
    parser.add_argument("--small", type=int, default=1_000, help="the small fleet the reader is measured at first")
    parser.add_argument("--window", type=float, default=60.0, help="seconds of steady state measured per contender")
    parser.add_argument("--rate", type=float, default=2.0, help="status changes per second during a window")
    parser.add_argument("--watch-timeout", type=int, default=60, help="server-side lifetime of one watch request")
    args = parser.parse_args(argv)
    state = Path(tempfile.mkdtemp(prefix="storeops-bench-status-"))
    print(f"starting etcd + kube-apiserver (watch cache on) in {state}", flush=True)
    running = harness_stack.start(state / "stack", full=False, watch_cache=True)
    results: list[dict[str, Any]] = []
    try:
        applications.install_application_crd(running)
        running.kubectl.run("create", "namespace", NAMESPACE)
        api = applications.api_client(running.kubeconfig)
        api.configuration.connection_pool_maxsize = 16
        api.rest_client.pool_manager.connection_pool_kw["maxsize"] = 16
        custom = client.CustomObjectsApi(api)
        ids = [f"s{i:05d}" for i in range(args.stores)]
        small, rest = ids[: args.small], ids[args.small:]
        took = create_fleet(custom, small)
        print(f"created {len(small)} Applications in {took:.1f}s", flush=True)
        rng = random.Random(7)

        receiver = receivers.CallbackReceiver(secret="bench")
        with contender(reader_process, str(running.kubeconfig), str(state), receiver.url, args.watch_timeout) as ask:
            took = wait_reports(receiver, len(small), timeout=600, what="reader (small fleet)")
            print(f"reader: first list and {len(small)} reports in {took:.1f}s", flush=True)
            results.append(measure(f"reader, {len(small)} stores", ask, receiver, custom,
                                   rng.sample(small, len(small)), window=args.window, rate=args.rate))
            print(results[-1], flush=True)
            took = create_fleet(custom, rest)
            print(f"created {len(rest)} more Applications in {took:.1f}s ({len(rest) / took:.0f}/s)", flush=True)
            wait_reports(receiver, len(ids) + results[-1]["changes"], timeout=900, what="reader (whole fleet)")
            used = {r.payload["store_id"] for r in receiver.all() if r.payload["status"] == "degraded"}
            fresh = [s for s in ids if s not in used]
            rng.shuffle(fresh)
            results.append(measure(f"reader, {len(ids)} stores", ask, receiver, custom, fresh[: len(fresh) // 2],
                                   window=args.window, rate=args.rate))
            print(results[-1], flush=True)
        receiver.close()
        used |= {r.payload["store_id"] for r in receiver.all() if r.payload["status"] == "degraded"}

        receiver = receivers.CallbackReceiver(secret="bench")
        names = [f"store-{s}" for s in ids]
        with contender(poller_process, str(running.kubeconfig), str(state), receiver.url, names) as ask:
            took = wait_reports(receiver, len(ids), timeout=900, what="poller")
            print(f"poller: first round of {len(ids)} reports in {took:.1f}s", flush=True)
            results.append(measure(f"poller, {len(ids)} stores", ask, receiver, custom,
                                   [s for s in fresh if s not in used], window=args.window, rate=args.rate))
            print(results[-1], flush=True)
        receiver.close()
        applications.close(api)
    finally:
        running.stop()

    print()
    print(f"{'contender':24} {'API req/min':>12} {'p50 s':>8} {'p99 s':>8} {'changes':>8} {'RSS MiB':>8} "
          f"{'peak MiB':>9}")
    for r in results:
        print(f"{r['name']:24} {r['requests_per_minute']:12.1f} {r['p50']:8.3f} {r['p99']:8.3f} {r['changes']:8d} "
              f"{r['rss_mib']:8.1f} {r['peak_mib']:9.1f}")
    small_reader, big_reader, poller = results
    print(f"\nreader requests/min, {args.small} -> {args.stores} stores: {small_reader['requests_per_minute']:.1f} -> "
          f"{big_reader['requests_per_minute']:.1f} (the poller: {poller['requests_per_minute']:.0f})")
    print(f"p99 reader / poller: {big_reader['p99'] / poller['p99']:.4f} (target <= 0.1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
