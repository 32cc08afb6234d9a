"""Staged chart upgrades through the real Argo CD: WooCommerce stores pinned to a release move to the
next one in waves, and only then run it.

The remote holds two releases of the WooCommerce chart (the second asks a larger default memory request
in the store's LimitRange, a managed object Argo CD applies); three stores are requested through
``storeops serve`` pinned to the first. A rollout (``POST /v1/rollouts``, a canary of one, then waves of
one) moves them; each store's Application then renders from the second release's folder, and the
LimitRange in its namespace says so. Pods run on kwok; the status reader reports ``ready``.
"""

from __future__ import annotations

import collections.abc
import json
import pathlib
import shutil
import time
import uuid
from typing import Any

import pytest

from generator import constants, publishing, releases, releasing
from harness import demo, stack

pytestmark = pytest.mark.e2e

ENGINE = "woocommerce"


def _source(target: pathlib.Path) -> tuple[pathlib.Path, str, str]:
    """This repository's data with two releases of the WooCommerce chart; the two versions."""
    for folder in publishing.SEED_FOLDERS:
        if (demo.ROOT / folder).is_dir():
            shutil.copytree(demo.ROOT / folder, target / folder, symlinks=True)
    first = releasing.release(target, ENGINE)
    chart = target / constants.TEMPLATES_DIR / ENGINE / "Chart.yaml"
    second = f"{first}-next"
    chart.write_text(chart.read_text().replace(f"version: {first}\n", f"version: {second}\n", 1))
    values = target / constants.TEMPLATES_DIR / ENGINE / "values.yaml"
    text = values.read_text()
    assert "    memory: 64Mi\n" in text
    values.write_text(text.replace("    memory: 64Mi\n", "    memory: 96Mi\n", 1))
    assert releasing.release(target, ENGINE) == second
    return target, first, second


@pytest.fixture(scope="module")
def loop(argocd_stack: stack.Stack, tmp_path_factory: pytest.TempPathFactory) -> collections.abc.Iterator[Any]:
    work = tmp_path_factory.mktemp("rollout-loop")
    source, first, second = _source(work / "source")
    running = demo.Loop(stack=argocd_stack, work=work)
    publishing.seed_remote(running.remote, source, "main")
    try:
        running.prepare()
        running.start_service()
        yield running, first, second
    finally:
        running.stop_service()
        log = work / "service.log"
        print(log.read_text(errors="replace")[-3000:] if log.exists() else "", flush=True)


def _limit_memory(running: demo.Loop, store_id: str) -> str:
    found = json.loads(running.stack.kubectl.run("get", "limitrange", "store-limits", "-n", f"store-{store_id}",
                                                 "-o", "json"))  # fmt: skip
    return str(found["spec"]["limits"][0]["defaultRequest"]["memory"])


def _app_path(running: demo.Loop, store_id: str) -> str:
    app = running.stack.application(f"store-{store_id}") or {}
    return str(app["spec"]["source"]["path"])  # type: ignore[index]


def test_stores_pinned_to_a_release_move_to_the_next_in_waves_through_argo_cd(loop: Any) -> None:
    running, first, second = loop
    ids = [f"wave-{i}-{uuid.uuid4().hex[:4]}" for i in range(3)]
    began = time.monotonic()
    for store_id in ids:
        answer = running.request_store({"id": store_id, "name": f"Shop {store_id}", "engine": ENGINE, "plan": "small",
                                        "cluster": demo.CLUSTER, "chartVersion": first,
                                        "owner": {"name": "Pat Doe", "email": f"pat@{store_id}.example"}})
        assert running.wait_request(answer["request_id"])["status"] == "committed"
    for store_id in ids:
        events = running.follow(store_id, until=("ready", "failed", "degraded"), since=began, timeout=600)
        assert events[-1]["status"] == "ready", events[-1]
        assert _app_path(running, store_id) == releases.chart_dir(ENGINE, first)
        assert _limit_memory(running, store_id) == "64Mi"

    started = time.monotonic()
    code, rollout = running.call("POST", "/v1/rollouts", {"engine": ENGINE, "version": second,
                                                          "cluster": demo.CLUSTER, "canary": [ids[0]], "batch": 1})
    assert code in (201, 202), rollout
    deadline = time.monotonic() + 900
    view: dict[str, Any] = rollout
    while time.monotonic() < deadline:
        code, view = running.call("GET", f"/v1/rollouts/{rollout['id']}")
        assert code == 200, view
        if view["state"] != "running":
            break
        time.sleep(3)
    assert view["state"] == "done", json.dumps(view, indent=1)
    print(f"rollout: {len(view['waves'])} waves done in {time.monotonic() - started:.0f}s", flush=True)
    waves = [w["stores"] for w in view["waves"]]
    assert waves[0] == [ids[0]], waves  # the canary first, alone
    assert all(len(w) == 1 for w in waves)
    moved = {s for w in waves for s in w}
    assert set(ids) <= moved
    for store_id in ids:
        assert _app_path(running, store_id) == releases.chart_dir(ENGINE, second)
        assert _limit_memory(running, store_id) == "96Mi"
    # Each wave was ready before the next was committed: the commits moving the stores follow the waves.
    finished = view["finished"]
    assert [f["stores"] for f in finished] == waves
