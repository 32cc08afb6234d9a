"""The charts' backup and restore objects (templates/storeops-lib/templates/_backup.tpl), rendered by
the real helm with the generator's values for the example stores plus backup settings.

Golden files (tests/golden/backup/<engine>.yaml; STOREOPS_UPDATE_GOLDEN=1 rewrites them) hold every
object the backup values add, and the tests below check what they must be: nothing without the
settings, the hook and wave order of a restore, no API token, keys only from the Secret, egress to
the S3 endpoint only. A server-side dry-run against the real API server accepts them.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
import pathlib
import subprocess
from typing import Any

import pytest
import yaml

from generator import operations, rendering
from harness import stack, versions

REPO = pathlib.Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden" / "backup"
EXAMPLES = {"woocommerce": "acme-outdoor", "medusa": "bookworm"}
FROM = "old-shop/20261127T031700Z-manual"
BACKUP = {
    "backup": {
        "enabled": True,
        "schedule": "17 3 * * *",
        "retention": 7,
        "s3": {"endpoint": "http://seaweedfs.storeops-backups.svc.cluster.local:8333", "bucket": "storeops-backups",
               "region": "us-east-1", "prefix": "local"},
        "secretName": "storeops-backup",
        "egress": {"namespace": "storeops-backups", "cidr": ""},
    },
}  # fmt: skip
RESTORE = {"restore": {"from": FROM}}
#: (kind, name) of what backup and restore add to a store.
ADDED = {("ConfigMap", "backup-script"), ("CronJob", "backup"), ("Job", "restore"),
         ("NetworkPolicy", "backup-egress")}  # fmt: skip
WEB = {"woocommerce": "wordpress", "medusa": "medusa"}
Manifest = dict[str, Any]


def _helm() -> pathlib.Path:
    path = versions.binaries().helm
    if not path.exists():
        pytest.fail(f"{path} is not built; run `{versions.BUILD_COMMAND}`", pytrace=False)
    return path


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _values(engine: str) -> tuple[str, dict[str, Any]]:
    fleet = operations.load(REPO)
    entry = fleet.stores[f"stores/{EXAMPLES[engine]}.yaml"].entry
    assert entry is not None
    model = entry.store
    values = rendering.values(model, fleet.clusters[model.cluster][0], fleet.plans[model.plan])
    # The tests' own backup settings on top (the local profile keeps backups: its are left out).
    values.pop("backup", None)
    return model.namespace, values


def _render(engine: str, tmp_path: pathlib.Path, *overlays: dict[str, Any], check: bool = True) -> Any:
    namespace, values = _values(engine)
    for overlay in overlays:
        values = _merge(values, overlay)
    path = tmp_path / f"{engine}-{len(list(tmp_path.iterdir()))}.yaml"
    path.write_text(yaml.safe_dump(values))
    result = subprocess.run(
        [str(_helm()), "template", f"store-{EXAMPLES[engine]}", str(REPO / "templates" / engine), "--namespace",
         namespace, "--values", str(path), "--kube-version", versions.read_versions().kubernetes.removeprefix("v")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if not check:
        return result
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def _one(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    found = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)}"
    return found[0]


def _added(manifests: list[Manifest]) -> list[Manifest]:
    return [m for m in manifests if (m["kind"], m["metadata"]["name"]) in ADDED]


def _pods(manifests: list[Manifest]) -> dict[str, Manifest]:
    pods = {}
    for m in _added(manifests):
        if m["kind"] == "CronJob":
            pods["CronJob/backup"] = m["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        elif m["kind"] == "Job":
            pods[f"Job/{m['metadata']['name']}"] = m["spec"]["template"]["spec"]
    return pods


@pytest.mark.parametrize("engine", sorted(EXAMPLES))
def test_backup_objects_match_the_golden_files(engine: str, tmp_path: pathlib.Path) -> None:
    added = _added(_render(engine, tmp_path, BACKUP, RESTORE))
    script = _one(added, "ConfigMap", "backup-script")
    # The script itself is checked against its file, not kept twice.
    assert script["data"]["backup.py"] == (REPO / "templates/storeops-lib/files/backup.py").read_text()
    script["data"]["backup.py"] = "<templates/storeops-lib/files/backup.py>"
    text = "---\n".join(yaml.safe_dump(m, sort_keys=True) for m in added)
    golden = GOLDEN / f"{engine}.yaml"
    if os.environ.get("STOREOPS_UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    expected = golden.read_text() if golden.exists() else ""
    diff = "".join(difflib.unified_diff(expected.splitlines(keepends=True), text.splitlines(keepends=True),
                                        f"expected/{golden.name}", f"rendered/{golden.name}"))  # fmt: skip
    assert not diff, f"rendered backup objects differ from {golden} (STOREOPS_UPDATE_GOLDEN=1 rewrites it):\n{diff}"


@pytest.mark.parametrize("engine", sorted(EXAMPLES))
def test_nothing_renders_without_backup_settings(engine: str, tmp_path: pathlib.Path) -> None:
    manifests = _render(engine, tmp_path)
    assert _added(manifests) == []
    web = _one(manifests, "Deployment", WEB[engine])["spec"]["template"]["spec"]
    assert "wait-for-restore" not in [c["name"] for c in web.get("initContainers", [])]


@pytest.mark.parametrize("engine", sorted(EXAMPLES))
def test_backups_run_on_a_schedule_from_a_job_template_storeops_reuses_and_not_while_suspended(
    engine: str, tmp_path: pathlib.Path
) -> None:
    manifests = _render(engine, tmp_path, BACKUP)
    assert {(m["kind"], m["metadata"]["name"]) for m in _added(manifests)} == ADDED - {("Job", "restore")}
    cron = _one(manifests, "CronJob", "backup")
    assert cron["spec"]["schedule"] == "17 3 * * *" and cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert cron["spec"]["suspend"] is False
    job = cron["spec"]["jobTemplate"]["spec"]
    env = {e["name"]: e.get("value") for e in job["template"]["spec"]["containers"][0]["env"]}
    assert env["BACKUP_KIND"] == "scheduled" and env["RETENTION"] == "7" and env["S3_PREFIX"] == "local"
    # storeops makes on-demand Jobs from the jobTemplate: a complete Job spec that needs nothing else.
    assert job["template"]["spec"]["restartPolicy"] == "Never" and "selector" not in job

    # No PreDelete hook: Argo CD would render it from a revision without the deleted store's values file.
    assert not [m for m in manifests if "argocd.argoproj.io/hook" in (m["metadata"].get("annotations") or {})
                and "PreDelete" in m["metadata"]["annotations"]["argocd.argoproj.io/hook"]]

    suspended = _render(engine, tmp_path, BACKUP, {"suspended": True})
    assert _one(suspended, "CronJob", "backup")["spec"]["suspend"] is True


@pytest.mark.parametrize("engine", sorted(EXAMPLES))
def test_backup_pods_read_the_content_volume_on_the_web_components_node(engine: str, tmp_path: pathlib.Path) -> None:
    manifests = _render(engine, tmp_path, BACKUP, RESTORE)
    web = _one(manifests, "Deployment", WEB[engine])["spec"]["template"]["spec"]
    web_claim = next(v["persistentVolumeClaim"]["claimName"] for v in web["volumes"] if "persistentVolumeClaim" in v)
    for name, pod in _pods(manifests).items():
        claims = [v["persistentVolumeClaim"] for v in pod["volumes"] if "persistentVolumeClaim" in v]
        assert [c["claimName"] for c in claims] == [web_claim], name
        assert pod["securityContext"]["runAsUser"] == web["securityContext"]["runAsUser"], name
        if name != "Job/restore":
            assert claims[0]["readOnly"] is True, name
            affinity = pod["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
            assert affinity["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == WEB[engine]


@pytest.mark.parametrize("engine", sorted(EXAMPLES))
def test_no_backup_pod_gets_an_api_token_or_a_literal_key(engine: str, tmp_path: pathlib.Path) -> None:
    manifests = _render(engine, tmp_path, BACKUP, RESTORE)
    for name, pod in _pods(manifests).items():
        assert pod["automountServiceAccountToken"] is False, name
        assert "serviceAccountName" not in pod, name
        assert not [v for v in pod["volumes"] if "projected" in v], name
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, (name, container["name"])
            for env in container.get("env", []):
                if env["name"] in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                    assert env["valueFrom"]["secretKeyRef"] == {"name": "storeops-backup", "key": env["name"]}
                if "PASSWORD" in env["name"] or env["name"] == "MYSQL_PWD":
                    assert env["valueFrom"]["secretKeyRef"]["name"] == "store-credentials", (name, env)


@pytest.mark.parametrize("engine", sorted(EXAMPLES))
def test_a_restore_runs_with_the_database_before_the_web_component_which_waits_for_it(
    engine: str, tmp_path: pathlib.Path
) -> None:
    manifests = _render(engine, tmp_path, RESTORE, {"backup": BACKUP["backup"] | {"enabled": False}})
    assert {(m["kind"], m["metadata"]["name"]) for m in _added(manifests)} == {
        ("ConfigMap", "backup-script"), ("Job", "restore"), ("NetworkPolicy", "backup-egress")}

    def wave(m: Manifest) -> int:
        return int(m["metadata"].get("annotations", {}).get("argocd.argoproj.io/sync-wave", "0"))

    restore = _one(manifests, "Job", "restore")
    annotations = restore["metadata"]["annotations"]
    assert annotations["argocd.argoproj.io/hook"] == "Sync"
    database = next(m for m in manifests if m["kind"] == "StatefulSet")
    web = _one(manifests, "Deployment", WEB[engine])
    # After the database; with the web component, whose content claim the restore pod mounts (a claim of
    # a later wave would not be there yet), and whose pods wait for the restore's marker.
    claim = next(m for m in manifests if m["kind"] == "PersistentVolumeClaim"
                 and m["metadata"]["name"] in {v["persistentVolumeClaim"]["claimName"] for v in
                                               restore["spec"]["template"]["spec"]["volumes"]
                                               if "persistentVolumeClaim" in v})
    # The script in the database's wave at the latest (Argo CD applies a ConfigMap before a StatefulSet).
    assert wave(_one(manifests, "ConfigMap", "backup-script")) <= wave(database) < wave(restore) == wave(web)
    assert wave(claim) <= wave(restore)
    steps = [c["name"] for c in restore["spec"]["template"]["spec"]["initContainers"]]
    assert steps == ["fetch", "load"]
    assert [c["name"] for c in restore["spec"]["template"]["spec"]["containers"]] == ["extract"]
    load = restore["spec"]["template"]["spec"]["initContainers"][1]
    assert load["image"] == database["spec"]["template"]["spec"]["containers"][0]["image"]
    env = {e["name"]: e.get("value") for e in restore["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["RESTORE_FROM"] == FROM and env["RESTORE_REPLACE"] == "false"
    # Replacing a store's own data (a rollback) is asked for explicitly, and empties the database first.
    replacing = _one(_render(engine, tmp_path, {"restore": {"from": FROM, "replace": True}}, BACKUP), "Job", "restore")
    spec = replacing["spec"]["template"]["spec"]
    assert {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}["RESTORE_REPLACE"] == "true"
    assert "if [ -f /work/replace ]; then" in spec["initContainers"][1]["command"][2]
    # The web component waits for the marker the restore writes last (plain Helm has no waves).
    wait = web["spec"]["template"]["spec"]["initContainers"][0]
    assert wait["name"] == "wait-for-restore"
    assert '\\"state\\": \\"done\\"' in wait["command"][2] and ".storeops-restore" in wait["command"][2]


@pytest.mark.parametrize("engine", sorted(EXAMPLES))
def test_backup_pods_may_reach_the_s3_endpoint_and_their_own_namespace_only(
    engine: str, tmp_path: pathlib.Path
) -> None:
    policy = _one(_render(engine, tmp_path, BACKUP), "NetworkPolicy", "backup-egress")["spec"]
    assert policy["policyTypes"] == ["Egress"]
    assert policy["podSelector"]["matchExpressions"] == [
        {"key": "app.kubernetes.io/component", "operator": "In", "values": ["backup", "restore"]}]
    assert policy["egress"] == [
        {"to": [{"podSelector": {}}]},
        {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
        {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "storeops-backups"}}}]},
    ]
    by_cidr = _merge(BACKUP, {"backup": {"egress": {"namespace": "", "cidr": "192.0.2.0/24"}}})
    policy = _one(_render(engine, tmp_path, by_cidr), "NetworkPolicy", "backup-egress")["spec"]
    assert policy["egress"][-1] == {"to": [{"ipBlock": {"cidr": "192.0.2.0/24"}}]}
    none = _merge(BACKUP, {"backup": {"egress": {"namespace": ""}}})
    assert not [m for m in _render(engine, tmp_path, none) if m["metadata"]["name"] == "backup-egress"]


@pytest.mark.parametrize("engine", sorted(EXAMPLES))
@pytest.mark.parametrize(
    ("overlay", "message"),
    [
        ({"backup": {"enabled": True}}, "backup.s3.endpoint is required"),
        ({"backup": {"enabled": True, "s3": {"endpoint": "http://s3:8333"}}}, "backup.s3.bucket is required"),
        ({"restore": {"from": "shop"}}, "/restore/from"),
        ({"restore": {"from": "shop/20261127T031700Z-weekly"}}, "/restore/from"),
        ({"backup": {"retention": 0}}, "/backup/retention"),
        ({"restore": {"replace": "yes"}}, "/restore/replace"),
        ({"backup": {"s3": {"endpoint": "s3.example.com"}}}, "/backup/s3/endpoint"),
        ({"backup": {"egress": {"cidr": "everywhere"}}}, "/backup/egress/cidr"),
        ({"backup": {"keys": "AKIA..."}}, "additional properties 'keys'"),
    ],
)
def test_bad_backup_values_are_refused_with_what_is_wrong(
    engine: str, overlay: dict[str, Any], message: str, tmp_path: pathlib.Path
) -> None:
    result = _render(engine, tmp_path, overlay, check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def _kubectl(api: stack.Stack, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(api.binaries.kubectl), f"--kubeconfig={api.kubeconfig}", *args], input=input,
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip


@pytest.mark.parametrize("engine", sorted(EXAMPLES))
def test_the_api_server_accepts_the_backup_objects_without_pod_security_warnings(
    kube_apiserver: stack.Stack, engine: str, tmp_path: pathlib.Path
) -> None:
    # A namespace of this test's own: other tests leave their own objects in the stores' namespaces on
    # the shared API server (a hand-made CronJob `backup`), and apply would merge into them.
    own = f"chart-backups-{engine}"
    manifests = _render(engine, tmp_path, BACKUP, RESTORE)
    for manifest in manifests:
        if manifest["kind"] == "Namespace":
            manifest["metadata"]["name"] = own
        elif manifest["metadata"].get("namespace"):
            manifest["metadata"]["namespace"] = own
    namespace = next(m for m in manifests if m["kind"] == "Namespace")
    created = _kubectl(kube_apiserver, "apply", "-f", "-", input=json.dumps(namespace))
    assert created.returncode == 0, created.stderr
    added = _added(manifests)
    result = _kubectl(kube_apiserver, "apply", "--dry-run=server", "-o", "name", "-f", "-",
                      input="\n---\n".join(json.dumps(m) for m in added))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.split()) == len(added)
    assert "Warning" not in result.stderr, result.stderr
