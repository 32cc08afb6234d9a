"""Rollouts: three woocommerce stores pinned to chart 0.1.0 move to 0.2.0 in waves of one, through the real
app, a real Git remote and the status reader on a real API server; the test plays Argo CD by writing each
Application's status as its controller would."""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml
from kubernetes import client
from starlette.testclient import TestClient

from generator import constants, operations, releases, releasing, rendering
from harness import applications, examples
from harness import stack as harness_stack
from harness.processes import free_port
from tests.integration.status import support
from webhook import app, cli
from webhook.settings import ServiceSettings, StatusSettings

WRITE = {"Authorization": f"Bearer {examples.WRITE_TOKEN}"}
READ = {"Authorization": f"Bearer {examples.READ_TOKEN}"}
#: The stores of the test, by id: the example's acme-outdoor and two more on the same cluster.
STORES = ("acme-outdoor", "birch-books", "cedar-crafts")
#: The local cluster keeping backups (the keys are never needed: no backup Job runs without a node).
BACKUPS = """\
backups:
  endpoint: http://seaweedfs.storeops-backups.svc:8333
  bucket: storeops-backups
  credentialsSecret: {namespace: storeops-backups, name: seaweedfs-s3}
"""


@dataclass
class Fleet:
    config: ServiceSettings
    status: StatusSettings
    bare: Path
    namespace: str
    custom: client.CustomObjectsApi


def _prepare(repo: Path, bare: Path, *, review: bool = False, backups: bool = False) -> None:
    """On the remote: woocommerce released as 0.1.0 and 0.2.0 (a chart change between), three stores
    pinned to 0.1.0, rendered; pushed as one commit. ``review``: the local cluster needs review."""
    work = repo.parent / "prepare"
    examples.git(repo.parent, "clone", "-q", str(bare), str(work))
    # Backups as the test says: the waves alone wait for no pre-upgrade backup.
    profile = work / "clusters/local.yaml"
    profile.write_text(examples.with_profile_keys(profile.read_text(), BACKUPS) if backups
                       else examples.without_profile_keys(profile.read_text(), "backups"))
    if review:
        profile = work / "clusters/local.yaml"
        assert "\nreview: false\n" in profile.read_text()
        profile.write_text(profile.read_text().replace("\nreview: false\n", "\nreview: true\n"))
    for store_id in STORES[1:]:
        entry = {**examples.store_payload(store_id), "state": "active"}
        (work / f"stores/{store_id}.yaml").write_text(yaml.safe_dump(entry, sort_keys=False))
    releasing.release(work, "woocommerce")
    chart = work / "templates/woocommerce"
    (chart / "Chart.yaml").write_text((chart / "Chart.yaml").read_text().replace("\nversion: 0.1.0\n",
                                                                                 "\nversion: 0.2.0\n"))
    notes = chart / "templates" / "NOTES.txt"
    notes.write_text(notes.read_text() + "\nChart 0.2.0.\n")
    releasing.release(work, "woocommerce")
    for store_id in STORES:
        path = work / f"stores/{store_id}.yaml"
        path.write_text(path.read_text() + "chartVersion: 0.1.0\n")
    assert operations.validate(work)[1] == []
    operations.render(work, allow_mass_delete=False)
    examples.git(work, "add", "-A")
    examples.git(work, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m",
                 "Release woocommerce 0.1.0 and 0.2.0; pin the test stores to 0.1.0")
    examples.git(work, "push", "-q", "origin", "HEAD:main")


@pytest.fixture(params=["direct"])
def fleet(request: pytest.FixtureRequest, tmp_path: Path, apiserver: harness_stack.Stack) -> Iterator[Fleet]:
    """Three stores on 0.1.0 with their Applications ready; indirectly parametrized: ``direct``, ``reviewed``
    (the local cluster needs review) or ``backups`` (it keeps backups)."""
    config = examples.service_settings(tmp_path, rollout_poll=0.05, review_poll_interval=0.2)
    bare = Path(str(config.git.remote))
    _prepare(config.git.repo, bare, review=request.param == "reviewed", backups=request.param == "backups")
    namespace = support.new_namespace(apiserver)
    status = StatusSettings(kubeconfig=str(apiserver.kubeconfig), namespace=namespace,
                            ledger=tmp_path / "status.sqlite3", workdir=config.git.workdir, backoff_min=0.1,
                            tick=0.1)
    api = support.api_client(apiserver.kubeconfig)
    custom = client.CustomObjectsApi(api)
    head = examples.git(bare, "rev-parse", "main").strip()
    for store_id in STORES:
        body = applications.application(store_id, namespace)
        body["status"] = applications.argo_status(sync="Synced", health="Healthy", phase="Succeeded", revision=head)
        custom.create_namespaced_custom_object(applications.GROUP, applications.VERSION, namespace,
                                               applications.PLURAL, body)
    try:
        yield Fleet(config, status, bare, namespace, custom)
    finally:
        for store_id in STORES:
            with contextlib.suppress(client.ApiException):
                custom.delete_namespaced_custom_object(applications.GROUP, applications.VERSION, namespace,
                                                       applications.PLURAL, f"store-{store_id}")
        support.close(api)


@contextlib.contextmanager
def served(fleet: Fleet) -> Iterator[httpx.Client]:
    """The service on a real port (uvicorn in a thread), for the command line to talk to."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app.create_app(fleet.config, status=fleet.status), host="127.0.0.1",
                                           port=port, log_level="error", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            def up() -> bool:
                try:
                    return http.get("/readyz").status_code == 200
                except httpx.TransportError:
                    return False
            support.wait_until("the service has read Git", up)
            yield http
    finally:
        server.should_exit = True
        thread.join(15)


def chart_version(fleet: Fleet, store_id: str) -> object:
    return examples.remote_stores(fleet.bare)[store_id].get("chartVersion")


def rendered_path(fleet: Fleet, store_id: str) -> str:
    """The chart path of the store's Application as committed on the remote."""
    text = examples.git(fleet.bare, "show", f"main:{rendering.app_path('local', store_id)}")
    return str(list(yaml.safe_load_all(text))[1]["spec"]["source"]["path"])


def head(fleet: Fleet) -> str:
    return examples.git(fleet.bare, "rev-parse", "main").strip()


def argo_ready(fleet: Fleet, store_id: str, revision: str) -> None:
    applications.set_status(fleet.custom, fleet.namespace, store_id, applications.argo_status(
        sync="Synced", health="Healthy", phase="Succeeded", revision=revision))


def wait_ready(http: TestClient | httpx.Client, *store_ids: str) -> None:
    support.wait_until(f"{', '.join(store_ids)} ready", lambda: all(
        (http.get(f"/v1/stores/{s}", headers=READ).json().get("status")) == "ready" for s in store_ids), timeout=30)


def rollout(http: TestClient | httpx.Client, rollout_id: str) -> dict[str, Any]:
    answer = http.get(f"/v1/rollouts/{rollout_id}", headers=READ)
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


def moved(fleet: Fleet, store_id: str) -> str:
    """Wait for the store's move to 0.2.0 on the remote; the commit that made it."""
    support.wait_until(f"{store_id} moved to 0.2.0 in Git", lambda: chart_version(fleet, store_id) == "0.2.0")
    return head(fleet)


def still(fleet: Fleet, seconds: float, check: Any) -> None:
    """``check`` holds for ``seconds`` (polled): what must not happen does not."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert check()
        time.sleep(0.05)


def test_a_failing_wave_halts_the_rollout_and_leaves_the_rest_untouched(
        fleet: Fleet, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("STOREOPS_API_TOKEN", examples.WRITE_TOKEN)
    with served(fleet) as http:
        monkeypatch.setenv("STOREOPS_API_URL", str(http.base_url))
        wait_ready(http, *STORES)
        asked = {"engine": "woocommerce", "version": "0.2.0", "cluster": "local", "canary": ["acme-outdoor"],
                 "batch": 1, "timeout": 120}
        # Not for a read token, and not to a version that was never released.
        assert http.post("/v1/rollouts", json=asked, headers=READ).status_code == 403
        assert cli.main(["rollout", "start", "--engine", "woocommerce", "--version", "0.3.0"]) == 1
        assert "no release '0.3.0'" in capsys.readouterr().err
        # Started from the command line, which talks to the service.
        assert cli.main(["rollout", "start", "--engine", "woocommerce", "--version", "0.2.0", "--cluster", "local",
                         "--canary", "acme-outdoor", "--batch", "1", "--timeout", "120"]) == 0
        printed = capsys.readouterr().out
        found = re.match(r"rollout ([0-9a-f]+): woocommerce 0.2.0 on local: running\n", printed)
        assert found, printed
        rollout_id = found.group(1)
        assert [w["stores"] for w in rollout(http, rollout_id)["waves"]] == [[s] for s in STORES]
        # The same stores cannot be in two rollouts at once.
        assert http.post("/v1/rollouts", json=asked, headers=WRITE).status_code == 409

        canary = moved(fleet, "acme-outdoor")
        assert rendered_path(fleet, "acme-outdoor") == releases.chart_dir("woocommerce", "0.2.0")
        assert "rollout" in examples.git(fleet.bare, "log", "-1", "--format=%B", "main")
        # The second wave waits for the canary to be ready at its commit (ready before it does not count).
        still(fleet, 1.0, lambda: chart_version(fleet, "birch-books") == "0.1.0")
        assert rollout(http, rollout_id)["state"] == "running"
        argo_ready(fleet, "acme-outdoor", canary)

        second = moved(fleet, "birch-books")
        assert second != canary and chart_version(fleet, "cedar-crafts") == "0.1.0"
        applications.set_status(fleet.custom, fleet.namespace, "birch-books", applications.argo_status(
            sync="Synced", health="Degraded", phase="Failed", revision=second,
            health_message="wordpress: readiness probe failed"))
        support.wait_until("the rollout halted", lambda: rollout(http, rollout_id)["state"] == "halted")

        report = rollout(http, rollout_id)["report"]
        assert report["wave"] == 2 and report["store"] == "birch-books"
        assert report["state"] in ("failed", "degraded") and "sync Failed" in report["message"]
        assert report["moved"] == ["acme-outdoor", "birch-books"]
        assert report["untouched"] == ["cedar-crafts"]
        # The third store stays where it was: its entry and its Application on 0.1.0, and no wave comes for it.
        still(fleet, 1.0, lambda: head(fleet) == second)
        assert chart_version(fleet, "cedar-crafts") == "0.1.0"
        assert rendered_path(fleet, "cedar-crafts") == releases.chart_dir("woocommerce", "0.1.0")
        assert rollout(http, rollout_id)["state"] == "halted"
        assert cli.main(["rollout", "show", rollout_id]) == 1
        shown = capsys.readouterr().out
        assert "halted at wave 2: birch-books" in shown and "untouched (still on their chart): cedar-crafts" in shown


def test_every_store_moves_wave_by_wave_across_a_restart(fleet: Fleet) -> None:
    asked = {"engine": "woocommerce", "version": "0.2.0", "cluster": "local", "canary": 1, "batch": 1,
             "timeout": 120}
    with TestClient(app.create_app(fleet.config, status=fleet.status)) as http:
        support.wait_until("the service has read Git", lambda: http.get("/readyz").status_code == 200)
        wait_ready(http, *STORES)
        started = http.post("/v1/rollouts", json=asked, headers=WRITE)
        assert started.status_code == 201, started.text
        rollout_id = started.json()["id"]
        commits = {STORES[0]: moved(fleet, STORES[0])}
    # The service restarts while the canary syncs: the rollout is where it was, and goes on.
    restarted = replace(fleet.config, rollout_poll=0.05)
    with TestClient(app.create_app(restarted, status=fleet.status)) as http:
        support.wait_until("the service has read Git", lambda: http.get("/readyz").status_code == 200)
        found = rollout(http, rollout_id)
        assert found["state"] == "running" and found["wave"] == 0 and found["moved"] == [STORES[0]]
        assert chart_version(fleet, STORES[1]) == "0.1.0"
        for index, store_id in enumerate(STORES):
            if store_id not in commits:
                commits[store_id] = moved(fleet, store_id)
            # Each wave comes only after the one before is ready.
            for later in STORES[index + 1:]:
                assert chart_version(fleet, later) == "0.1.0"
            argo_ready(fleet, store_id, commits[store_id])
        support.wait_until("the rollout done", lambda: rollout(http, rollout_id)["state"] == "done")
        done = rollout(http, rollout_id)
        assert [w["stores"] for w in done["finished"]] == [[s] for s in STORES]
        assert [w["commits"] for w in done["finished"]] == [[commits[s]] for s in STORES]
        assert done["untouched"] == [] and done["report"]["message"] == "every store is at woocommerce 0.2.0"
        assert len(set(commits.values())) == 3
        for store_id in STORES:
            assert chart_version(fleet, store_id) == "0.2.0"
            assert rendered_path(fleet, store_id) == releases.chart_dir("woocommerce", "0.2.0")
        listed = http.get("/v1/rollouts", headers=READ).json()["rollouts"]
        assert [r["id"] for r in listed] == [rollout_id]
        # Nothing left to move: a second rollout of the same version is refused.
        again = http.post("/v1/rollouts", json=asked, headers=WRITE)
        assert again.status_code == 422 and "already there" in again.json()["error"]
    assert constants.RELEASES_DIR in rendered_path(fleet, STORES[2])


def _branches(fleet: Fleet) -> list[str]:
    return [line.split("refs/heads/")[1] for line in
            examples.git(fleet.bare, "for-each-ref", "--format=%(refname)", "refs/heads/").splitlines()]


@pytest.mark.parametrize("fleet", ["reviewed"], indirect=True)
def test_on_a_reviewed_cluster_the_plan_is_reviewed_once_and_the_waves_follow_it(fleet: Fleet) -> None:
    asked = {"engine": "woocommerce", "version": "0.2.0", "cluster": "local", "canary": 1, "batch": 1,
             "timeout": 120}
    with TestClient(app.create_app(fleet.config, status=fleet.status)) as http:
        support.wait_until("the service has read Git", lambda: http.get("/readyz").status_code == 200)
        wait_ready(http, *STORES)
        before = head(fleet)
        started = http.post("/v1/rollouts", json=asked, headers=WRITE)
        assert started.status_code == 201, started.text
        rollout_id = started.json()["id"]
        assert started.json()["state"] == "review"
        branch = f"storeops/rollout-{rollout_id}"
        assert started.json()["review"]["branch"] == branch and branch in _branches(fleet)
        # One pull request: the plan, listing the waves; nothing moves on main meanwhile.
        plan = yaml.safe_load(examples.git(fleet.bare, "show", f"{branch}:rollouts/{rollout_id}.yaml"))
        assert plan["waves"] == [[s] for s in STORES] and plan["version"] == "0.2.0"
        still(fleet, 1.0, lambda: head(fleet) == before)
        assert rollout(http, rollout_id)["state"] == "review"

        # The reviewer changes the order (cedar-crafts first) and merges.
        work = fleet.bare.parent / "reviewer"
        examples.git(fleet.bare.parent, "clone", "-q", "-b", branch, str(fleet.bare), str(work))
        edited = work / f"rollouts/{rollout_id}.yaml"
        edited.write_text(edited.read_text().replace(
            "- [acme-outdoor]\n- [birch-books]\n- [cedar-crafts]", "- [cedar-crafts]\n- [acme-outdoor, birch-books]"))
        git = ["-c", "user.name=r", "-c", "user.email=r@example.com"]
        examples.git(work, *git, "commit", "-qam", "Cedar first, then the other two")
        examples.git(work, "checkout", "-q", "main")
        examples.git(work, *git, "merge", "-q", "--no-ff", "-m", "Merge the rollout plan", branch)
        examples.git(work, "push", "-q", "origin", "main")

        # The merged plan runs, each wave committed on main without a pull request of its own.
        first = moved(fleet, "cedar-crafts")
        assert chart_version(fleet, "acme-outdoor") == "0.1.0"
        support.wait_until("the plan's branch deleted", lambda: branch not in _branches(fleet))
        argo_ready(fleet, "cedar-crafts", first)
        second = moved(fleet, "acme-outdoor")
        support.wait_until("birch-books moved", lambda: chart_version(fleet, "birch-books") == "0.2.0")
        for store_id in ("acme-outdoor", "birch-books"):
            argo_ready(fleet, store_id, second)
        support.wait_until("the rollout done", lambda: rollout(http, rollout_id)["state"] == "done")
        done = rollout(http, rollout_id)
        assert [w["stores"] for w in done["finished"]] == [["cedar-crafts"], ["acme-outdoor", "birch-books"]]
        assert not [b for b in _branches(fleet) if b.startswith("storeops/")]
        assert "rollout" in examples.git(fleet.bare, "log", "-1", "--format=%B", "main")

        # A plan closed without merging: the rollout is called off, nothing moves.
        back = http.post("/v1/rollouts", json={**asked, "version": "0.1.0"}, headers=WRITE)
        assert back.status_code == 201 and back.json()["state"] == "review", back.text
        called_off = back.json()["id"]
        at = head(fleet)
        examples.git(fleet.bare, "branch", "-D", f"storeops/rollout-{called_off}")
        support.wait_until("the rollout halted", lambda: rollout(http, called_off)["state"] == "halted")
        report = rollout(http, called_off)["report"]
        assert report["state"] == "rejected" and "closed without merging" in report["message"]
        still(fleet, 1.0, lambda: head(fleet) == at)
        assert all(chart_version(fleet, s) == "0.2.0" for s in STORES)


def _backup_cronjob(batch: client.BatchV1Api, store_id: str) -> None:
    """The store's backup CronJob as its chart renders it on a cluster with backups (its pods never run here)."""
    namespace = f"store-{store_id}"
    with contextlib.suppress(client.ApiException):
        client.CoreV1Api(batch.api_client).create_namespace(client.V1Namespace(
            metadata=client.V1ObjectMeta(name=namespace)))
    container = client.V1Container(name="upload", image="storeops.local/python:3.13-trixie",
                                   env=[client.V1EnvVar(name="BACKUP_KIND", value="scheduled")])
    with contextlib.suppress(client.ApiException):
        batch.delete_namespaced_cron_job("backup", namespace)
    batch.create_namespaced_cron_job(namespace, client.V1CronJob(
        metadata=client.V1ObjectMeta(name="backup"),
        spec=client.V1CronJobSpec(schedule="17 3 * * *", job_template=client.V1JobTemplateSpec(
            spec=client.V1JobSpec(template=client.V1PodTemplateSpec(spec=client.V1PodSpec(
                restart_policy="Never", containers=[container])))))))


def _finish_job(batch: client.BatchV1Api, store_id: str, job: str, *, ok: bool) -> None:
    """What the job controller writes when the backup Job's pod ends."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    conditions = ([{"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": now},
                   {"type": "Complete", "status": "True", "lastTransitionTime": now}] if ok else
                  [{"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit", "lastTransitionTime": now},
                   {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit", "lastTransitionTime": now}])
    status = {"startTime": now, "conditions": conditions, **({"succeeded": 1, "completionTime": now} if ok
                                                              else {"failed": 1})}
    batch.patch_namespaced_job_status(job, f"store-{store_id}", {"status": status})


@pytest.mark.parametrize("fleet", ["backups"], indirect=True)
def test_each_store_is_backed_up_before_it_moves_and_a_failed_backup_halts_with_it_untouched(
        fleet: Fleet) -> None:
    api = fleet.custom.api_client
    batch = client.BatchV1Api(api)
    for store_id in STORES:
        _backup_cronjob(batch, store_id)
    asked = {"engine": "woocommerce", "version": "0.2.0", "cluster": "local", "canary": 1, "batch": 1,
             "timeout": 120}
    try:
        _backed_up_rollout(fleet, batch, asked)
    finally:
        for store_id in STORES:
            with contextlib.suppress(client.ApiException):
                batch.delete_namespaced_cron_job("backup", f"store-{store_id}")


def _backed_up_rollout(fleet: Fleet, batch: client.BatchV1Api, asked: dict[str, Any]) -> None:
    with TestClient(app.create_app(fleet.config, status=fleet.status)) as http:
        support.wait_until("the service has read Git", lambda: http.get("/readyz").status_code == 200)
        wait_ready(http, *STORES)
        started = http.post("/v1/rollouts", json=asked, headers=WRITE)
        assert started.status_code == 201, started.text
        rollout_id = started.json()["id"]

        def backup_of(store_id: str) -> str:
            support.wait_until(f"{store_id}'s pre-upgrade backup", lambda: store_id in rollout(http, rollout_id)[
                "backups"])
            job: str = rollout(http, rollout_id)["backups"][store_id]
            found = batch.read_namespaced_job(job, f"store-{store_id}")
            assert {e.name: e.value for e in found.spec.template.spec.containers[0].env}["BACKUP_KIND"] == \
                "pre-upgrade"
            return job

        # The canary's backup first; the store moves only once it is done.
        job = backup_of("acme-outdoor")
        still(fleet, 1.0, lambda: chart_version(fleet, "acme-outdoor") == "0.1.0")
        _finish_job(batch, "acme-outdoor", job, ok=True)
        argo_ready(fleet, "acme-outdoor", moved(fleet, "acme-outdoor"))
        # The second store's backup fails: the rollout halts before moving it, and says why.
        job = backup_of("birch-books")
        _finish_job(batch, "birch-books", job, ok=False)
        support.wait_until("the rollout halted", lambda: rollout(http, rollout_id)["state"] == "halted")
        report = rollout(http, rollout_id)["report"]
        assert report["store"] == "birch-books" and report["state"] == "backup-failed"
        assert "BackoffLimitExceeded" in report["message"] and "nothing moved" in report["message"]
        assert report["untouched"] == ["birch-books", "cedar-crafts"]
        still(fleet, 1.0, lambda: chart_version(fleet, "birch-books") == "0.1.0")
        assert chart_version(fleet, "cedar-crafts") == "0.1.0"
        assert "cedar-crafts" not in rollout(http, rollout_id)["backups"]
