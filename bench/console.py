"""Console benchmark: the console's pages for a fleet of N stores, beside the JSON API for the same data.

    python bench/console.py [--stores 10000] [--rounds 20]

The real app in-process with a fleet of N stores in its Git remote; an operator's session (who sees
every store) and an owner's session (who sees one) are opened in the service's own session store.
Each page is requested ``rounds`` times after one warm-up; the median and p95 are printed beside
``GET /v1/stores`` (the same stores, as JSON, one page of the same size) and the ratio of the two.
Target: every console page under 100 ms at 10,000 stores.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from render import make_repo  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from generator import publishing  # noqa: E402
from harness import examples  # noqa: E402
from webhook import app, signin  # noqa: E402


def timed(client: TestClient, path: str, rounds: int, **kwargs: object) -> list[float]:
    assert client.get(path, **kwargs).status_code == 200, path  # type: ignore[arg-type]
    out = []
    for _ in range(rounds):
        started = time.perf_counter()
        answer = client.get(path, **kwargs)  # type: ignore[arg-type]
        out.append(time.perf_counter() - started)
        assert answer.status_code == 200
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        repo = work / "repo"
        make_repo(repo, args.stores)
        publishing.seed_remote(work / "remote.git", repo, "main")
        settings = examples.service_settings(work / "service", oidc_issuer="http://localhost:1/",
                                             oidc_client_id="bench", oidc_client_secret="bench", rate=0)
        settings = replace(settings, git=replace(settings.git, repo=repo, remote=str(work / "remote.git")))
        with TestClient(app.create_app(settings)) as client:
            deadline = time.monotonic() + 600
            while client.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline
                time.sleep(0.2)
            sessions = client.app.state.signin[1]  # type: ignore[attr-defined]
            operator = sessions.open(signin.Session("op-1", "op@platform.example", signin.OPERATOR))
            owner = sessions.open(signin.Session("owner-7", "owner7@example.com", signin.OWNER))
            token = {"Authorization": f"Bearer {examples.WRITE_TOKEN}"}
            rows = {
                "GET /v1/stores?limit=200 (API)": timed(client, "/v1/stores?limit=200", args.rounds, headers=token),
                "/console (operator)": timed(client, "/console", args.rounds, cookies={signin.COOKIE: operator}),
                "/console/fleet (operator)": timed(client, "/console/fleet", args.rounds,
                                                   cookies={signin.COOKIE: operator}),
                "/console/stores/store-00007 (owner)": timed(client, "/console/stores/store-00007", args.rounds,
                                                             cookies={signin.COOKIE: owner}),
                "/console (owner of 1)": timed(client, "/console", args.rounds, cookies={signin.COOKIE: owner}),
            }
    api = statistics.median(rows["GET /v1/stores?limit=200 (API)"])
    print(f"console pages for {args.stores} stores, {args.rounds} rounds each (median, p95, vs the API)")
    for name, seconds in rows.items():
        median = statistics.median(seconds)
        p95 = sorted(seconds)[max(0, int(len(seconds) * 0.95) - 1)]
        verdict = "" if name.endswith("(API)") else ("  ok (< 100 ms)" if median < 0.1 else "  OVER 100 ms")
        print(f"  {name:40s} {median * 1000:8.1f} ms {p95 * 1000:8.1f} ms {median / api:6.2f}x{verdict}")


if __name__ == "__main__":
    main()
