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


def _request_ready(running: Any, ids: list[str], version: str) -> None:
    """The stores requested through storeops pinned to ``version``, each ready."""
    began = time.monotonic()
    for store_id in ids:
        answer = running.request_store({"id": store_id, "name": f"Shop {store_id}", "engine": ENGINE, "plan": "small",
                                        "cluster": demo.CLUSTER, "chartVersion": version,
                                        "owner": {"name": "Pat Doe", "email": f"pat@{store_id}.example"}})
        assert running.wait_request(answer["request_id"])["status"] == "committed"
    for store_id in ids:
        events = running.follow(store_id, until=("ready", "failed", "degraded"), since=began, timeout=600)
        assert events[-1]["status"] == "ready", events[-1]


def test_stores_pinned_to_a_release_move_to_the_next_in_waves_through_argo_cd(loop: Any) -> None:
    running, first, second = loop
    ids = [f"wave-{i}-{uuid.uuid4().hex[:4]}" for i in range(3)]
    _request_ready(running, ids, first)
    for store_id in ids:
        assert _app_path(running, store_id) == releases.chart_dir(ENGINE, first)
        assert _limit_memory(running, store_id) == "64Mi"

    started = time.monotonic()
    code, rollout = running.call("POST", "/v1/rollouts", {"engine": ENGINE, "version": second,
                                                          "cluster": demo.CLUSTER, "canary": [ids[0]], "batch": 1})
    assert code in (201, 202), rollout
    view = _ended(running, rollout, timeout=900)
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


def _refuse_release(running: demo.Loop, store_id: str) -> str:
    """An injected failure: the API server refuses the second release's LimitRange in this store's namespace
    (a ValidatingAdmissionPolicy), so Argo CD's sync of the store fails there and nowhere else."""
    name = f"e2e-refuse-{store_id}"
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {"failurePolicy": "Fail",
                 "matchConstraints": {
                     "resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                                        "resources": ["limitranges"]}],
                     "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": f"store-{store_id}"}}},
                 "validations": [{"expression": "object.spec.limits.all(l, !has(l.defaultRequest) || "
                                                "!has(l.defaultRequest.memory) || l.defaultRequest.memory != '96Mi')",
                                  "message": "injected failure: this store refuses the new release"}]},
    }
    binding = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
               "metadata": {"name": name}, "spec": {"policyName": name, "validationActions": ["Deny"]}}
    running.stack.kubectl.apply(policy, binding)
    return name


def _ended(running: Any, rollout: dict[str, Any], *, timeout: float) -> dict[str, Any]:
    """The rollout's view once it is no longer running (or at the timeout, as it then is)."""
    deadline = time.monotonic() + timeout
    view = rollout
    while time.monotonic() < deadline:
        code, view = running.call("GET", f"/v1/rollouts/{rollout['id']}")
        assert code == 200, view
        if view["state"] != "running":
            break
        time.sleep(3)
    return view


def halted_rollout(running: Any, engine: str, version: str, ids: list[str], *, wave_timeout: int) -> dict[str, Any]:
    """A rollout of ``engine`` to ``version`` with ``ids[0]`` as its canary and waves of one, which must halt at
    the second wave (``ids[1]``, where a failure was injected) with ``ids[2]`` untouched; its report."""
    started = time.monotonic()
    code, rollout = running.call("POST", "/v1/rollouts", {"engine": engine, "version": version,
                                                          "cluster": demo.CLUSTER, "canary": [ids[0]], "batch": 1,
                                                          "timeout": wave_timeout})  # fmt: skip
    assert code in (201, 202), rollout
    # The canary, then one store per wave in id order: these three first (other stores of the engine come later).
    assert [w["stores"] for w in rollout["waves"]][:3] == [[ids[0]], [ids[1]], [ids[2]]], rollout["waves"]
    view = _ended(running, rollout, timeout=3 * wave_timeout)
    print(f"{engine} rollout halted after {time.monotonic() - started:.0f}s: {view.get('report')}", flush=True)
    assert view["state"] == "halted", json.dumps(view, indent=1)
    report: dict[str, Any] = view["report"]
    assert report["wave"] == 2 and report["store"] == ids[1] and report["state"] in ("failed", "degraded")
    assert "injected failure" in report["message"], report
    assert report["moved"] == ids[:2] and report["untouched"][0] == ids[2], report
    return report


def test_a_failure_in_the_second_wave_halts_the_rollout_with_the_third_store_untouched(loop: Any) -> None:
    running, first, second = loop
    # Named to sort first: other stores still on the first release (the example's) come in later waves.
    ids = [f"aa-{i}-{uuid.uuid4().hex[:4]}" for i in range(3)]
    _request_ready(running, ids, first)
    policy = _refuse_release(running, ids[1])
    try:
        halted_rollout(running, ENGINE, second, ids, wave_timeout=600)
        # The canary runs the new release; the failing store's Application renders it and fails; the third
        # store's entry and Application stay on the first release.
        assert _app_path(running, ids[0]) == releases.chart_dir(ENGINE, second)
        assert _limit_memory(running, ids[0]) == "96Mi"
        assert _limit_memory(running, ids[1]) == "64Mi"
        assert _app_path(running, ids[2]) == releases.chart_dir(ENGINE, first)
        assert _limit_memory(running, ids[2]) == "64Mi"
        code, third = running.call("GET", f"/v1/stores/{ids[2]}")
        assert code == 200 and third["entry"]["chartVersion"] == first, third

        # The failed store is rolled back: its entry as when it was last ready, at a new commit, ready again.
        code, failing = running.call("GET", f"/v1/stores/{ids[1]}")
        assert code == 200 and failing["status"] in ("failed", "degraded"), failing
        failed_at = str((failing.get("deployment") or {}).get("revision") or "")
        assert failing["rollback"]["to"] != failed_at, failing
        rolled_back = time.monotonic()
        code, answer = running.call("POST", f"/v1/stores/{ids[1]}/rollback",
                                    {"reason": "the new release is refused in this namespace"})
        assert code == 202, answer
        view_request = running.wait_request(answer["request_id"])
        assert view_request["status"] == "committed", view_request
        events = running.follow(ids[1], until=("ready",), since=rolled_back, timeout=600, after_revision=failed_at)
        assert events[-1]["status"] == "ready" and events[-1]["revision"] != failed_at, events[-1]
        print(f"rollback of {ids[1]}: ready again {time.monotonic() - rolled_back:.0f}s after asking, at "
              f"{str(events[-1]['revision'])[:12]}", flush=True)
        code, back = running.call("GET", f"/v1/stores/{ids[1]}")
        assert code == 200 and back["entry"]["chartVersion"] == first, back
        assert _app_path(running, ids[1]) == releases.chart_dir(ENGINE, first)
        assert _limit_memory(running, ids[1]) == "64Mi"
    finally:
        running.stack.kubectl.run("delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", policy,
                                  "--ignore-not-found")
