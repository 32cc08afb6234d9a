"""Intake benchmark: 1,000 store requests from 50 concurrent clients, batching writer vs per-request writer.

Runs a real ``storeops serve`` process on a copy of the example data with a local bare remote, twice in
one run: once with the batching writer (everything pending in one commit and one push) and once with
``STOREOPS_BATCH_MAX=1`` (one commit and one push per request). Prints, for each: accepted/s, p50/p99
time to the 2xx, pushes made, time until every request is in the remote, lost and doubled stores, and
the ratio of end-to-end throughput (requests landed in the remote per second). With ``--postgres``, the
batching writer runs a third time with its state in PostgreSQL (a throwaway cluster of Debian's binaries,
``STOREOPS_DATABASE_URL``), side by side with SQLite.

    python3 bench/intake.py [--requests 1000] [--clients 50] [--baseline-timeout 600] [--postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import examples, postgres

HEADERS = {"Authorization": f"Bearer {examples.WRITE_TOKEN}"}


@dataclass
class Result:
    label: str
    requests: int
    accepted: int
    accept_seconds: float
    latencies: list[float]
    landed: int
    land_seconds: float
    pushes: int
    lost: int
    doubled: int
    finished: bool

    @property
    def accepted_per_second(self) -> float:
        return self.accepted / self.accept_seconds

    @property
    def landed_per_second(self) -> float:
        return self.landed / self.land_seconds if self.land_seconds else 0.0


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _landed(bare: Path, wanted: set[str]) -> int:
    listing = examples.git(bare, "ls-tree", "--name-only", "main", "stores/")
    return len(wanted & {p.removeprefix("stores/").removesuffix(".yaml") for p in listing.split()})


async def _burst(url: str, ids: list[str], clients: int) -> tuple[list[float], int]:
    queue: asyncio.Queue[str] = asyncio.Queue()
    for store_id in ids:
        queue.put_nowait(store_id)
    latencies: list[float] = []
    accepted = 0

    async def client() -> None:
        nonlocal accepted
        async with httpx.AsyncClient(timeout=60) as http:
            while not queue.empty():
                store_id = queue.get_nowait()
                started = time.perf_counter()
                answer = await http.post(f"{url}/v1/stores", json=examples.store_payload(store_id),
                                         headers={**HEADERS, "Idempotency-Key": store_id})
                latencies.append(time.perf_counter() - started)
                if answer.status_code == 202:
                    accepted += 1
                else:
                    print(f"  {store_id}: {answer.status_code} {answer.text[:200]}", file=sys.stderr)

    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies, accepted


def run(label: str, *, requests: int, clients: int, batch_max: int, timeout: float, workdir: Path,
        extra_env: dict[str, str] | None = None) -> Result:
    config = examples.service_settings(workdir, capacity=requests * 2 + 10)
    bare = Path(config.git.remote)
    port = _port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "STOREOPS_REPO": str(config.git.repo), "STOREOPS_REMOTE": str(bare),
           "STOREOPS_STATE_DIR": str(config.git.state_dir), "STOREOPS_PORT": str(port),
           "STOREOPS_API_TOKENS": examples.WRITE_TOKEN, "STOREOPS_RATE": "0",
           "STOREOPS_BATCH_MAX": str(batch_max), "STOREOPS_BATCH_WINDOW": "0.05" if batch_max > 1 else "0",
           **(extra_env or {})}
    log = open(workdir / "serve.log", "wb")  # noqa: SIM115 - closed below
    server = subprocess.Popen([sys.executable, "-m", "webhook.cli", "serve"], env=env, stdout=log, stderr=log,
                              cwd=examples.ROOT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit(f"{label}: storeops serve did not start; see {workdir / 'serve.log'}")
            time.sleep(0.1)
        commits_before = examples.commit_count(bare)
        ids = [f"bench-{i:05d}" for i in range(requests)]
        wanted = set(ids)
        started = time.perf_counter()
        latencies, accepted = asyncio.run(_burst(url, ids, clients))
        accept_seconds = time.perf_counter() - started
        print(f"  {label}: {accepted} accepted in {accept_seconds:.2f}s; waiting for the remote...", flush=True)
        landed = 0
        while time.perf_counter() - started < timeout:
            landed = _landed(bare, wanted)
            if landed == requests:
                break
            time.sleep(0.05)
        land_seconds = time.perf_counter() - started
        additions = examples.additions(bare)
        doubled = sum(1 for i in ids if additions.get(f"stores/{i}.yaml", 0) > 1)
        finished = landed == requests
        return Result(label, requests, accepted, accept_seconds, latencies, landed, land_seconds,
                      examples.commit_count(bare) - commits_before, requests - landed if finished else 0,
                      doubled, finished)
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def _ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(results: list[Result]) -> None:
    print()
    print(f"{'writer':<22}{'accepted/s':>11}{'p50 2xx':>10}{'p99 2xx':>10}{'pushes':>8}"
          f"{'all in remote':>15}{'landed/s':>10}{'lost':>6}{'doubled':>9}")
    for r in results:
        in_remote = f"{r.land_seconds:.1f}s" if r.finished else f">{r.land_seconds:.0f}s ({r.landed})"
        print(f"{r.label:<22}{r.accepted_per_second:>11.0f}{_ms(r.latencies, 0.5):>8.1f}ms"
              f"{_ms(r.latencies, 0.99):>8.1f}ms{r.pushes:>8}{in_remote:>15}{r.landed_per_second:>10.1f}"
              f"{r.lost if r.finished else '-':>6}{r.doubled:>9}")
    batching, single = results
    print()
    ratio = batching.landed_per_second / single.landed_per_second if single.landed_per_second else float("inf")
    print(f"end-to-end throughput (requests in the remote per second): {ratio:.1f}x the per-request writer "
          f"(target >= 20x)")
    print(f"accepted/s: {batching.accepted_per_second / single.accepted_per_second:.1f}x; "
          f"pushes: {batching.pushes} vs {single.pushes}; "
          f"median 2xx {statistics.median(batching.latencies) * 1000:.1f}ms vs "
          f"{statistics.median(single.latencies) * 1000:.1f}ms")
    if not single.finished:
        print(f"(the per-request writer landed {single.landed} of {single.requests} within the "
              f"--baseline-timeout; its rate is measured over that window)")


def report_state(sqlite: Result, on_postgres: Result) -> None:
    print()
    print(f"{'state':<22}{'accepted/s':>11}{'p50 2xx':>10}{'p99 2xx':>10}{'all in remote':>15}{'lost':>6}"
          f"{'doubled':>9}")
    for label, r in (("SQLite (default)", sqlite), ("PostgreSQL", on_postgres)):
        in_remote = f"{r.land_seconds:.1f}s" if r.finished else f">{r.land_seconds:.0f}s ({r.landed})"
        print(f"{label:<22}{r.accepted_per_second:>11.0f}{_ms(r.latencies, 0.5):>8.1f}ms"
              f"{_ms(r.latencies, 0.99):>8.1f}ms{in_remote:>15}{r.lost if r.finished else '-':>6}{r.doubled:>9}")
    print(f"PostgreSQL / SQLite: accepted/s {on_postgres.accepted_per_second / sqlite.accepted_per_second:.2f}x, "
          f"all in the remote {on_postgres.land_seconds / sqlite.land_seconds:.2f}x the time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--baseline-timeout", type=float, default=600.0,
                        help="seconds to let the per-request writer run (default: 600)")
    parser.add_argument("--postgres", action="store_true",
                        help="also run the batching writer with its state in PostgreSQL, against SQLite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="storeops-bench-") as tmp:
        print(f"{args.requests} requests from {args.clients} concurrent clients, real storeops serve, "
              f"local bare remote")
        batching = run("batching (1 push/batch)", requests=args.requests, clients=args.clients,
                       batch_max=10_000, timeout=600, workdir=Path(tmp) / "batching")
        single = run("per-request push", requests=args.requests, clients=args.clients, batch_max=1,
                     timeout=args.baseline_timeout, workdir=Path(tmp) / "single")
        report([batching, single])
        if args.postgres:
            with postgres.cluster(prefix="storeops-bench-pg-") as pg:
                on_postgres = run("batching, PostgreSQL", requests=args.requests, clients=args.clients,
                                  batch_max=10_000, timeout=600, workdir=Path(tmp) / "postgres",
                                  extra_env={"STOREOPS_DATABASE_URL": pg.create_database("bench")})
            report_state(batching, on_postgres)


if __name__ == "__main__":
    main()
