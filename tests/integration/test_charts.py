"""The store charts under templates/, rendered by the real helm with values from the real generator.

Every engine x plan x cluster profile: helm lint, helm template (twice, identical), the shape of what
comes out (quota = plan, ingress, suspension, security settings, no literal secrets), and a
server-side dry-run against the real API server. The credentials script the charts ship is run for
real against the API server, with the token of the ServiceAccount the chart creates for it.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import pathlib
import re
import subprocess
import sys
import uuid
from typing import Any

import pytest
import yaml

from generator import emitting, images, models, operations, rendering, validation
from harness import stack, versions

REPO = pathlib.Path(__file__).resolve().parents[2]
ENGINES = validation.engines()
WORKLOADS = ("Deployment", "StatefulSet")
# Env vars that hold a credential: they must come from the Secret, never be literal.
SECRET_ENV = re.compile(r"PASSWORD|SECRET|_KEY$|_SALT$")
# ...except the credentials script's own settings, which name the Secret and its keys.
SCRIPT_SETTINGS = ("SECRET_NAME", "SECRET_KEYS", "SECRET_LABELS")
POD_SECURITY_LABELS = (
    "pod-security.kubernetes.io/enforce",
    "pod-security.kubernetes.io/audit",
    "pod-security.kubernetes.io/warn",
)

Manifest = dict[str, Any]


# --- the matrix: every engine x plan x cluster profile, values from the generator ------------------


@dataclasses.dataclass(frozen=True)
class Case:
    engine: str
    plan: models.Plan
    cluster: models.Cluster
    store: models.Store
    #: The chart's default images, as the generator reads them from its values.yaml.
    chart_images: dict[str, images.Image] = dataclasses.field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.engine}-{self.plan.name}-{self.cluster.name}-{self.store.state}"

    @property
    def namespace(self) -> str:
        return self.store.namespace

    def values(self) -> dict[str, Any]:
        return rendering.values(self.store, self.cluster, self.plan, self.chart_images)

    def images(self) -> dict[str, images.Image]:
        """The image each component should run: the chart's default with the profile's settings."""
        return images.effective(self.engine, self.cluster.images, self.chart_images)

    def values_text(self) -> str:
        """The values file exactly as `storeops render` writes it."""
        return emitting.dump(self.values(), "test values")


def _store(engine: str, plan: str, cluster: str, *, state: str = "active", github: bool = True) -> models.Store:
    return models.Store(
        id=f"{engine[:3]}-{plan}-{cluster}-{state[:3]}",
        name=f"Test {engine} {plan} on {cluster}",
        engine=engine,
        plan=plan,
        cluster=cluster,
        owner=models.Owner(name="Jane Doe", email="jane@example.test", github="janedoe" if github else None),
        state=state,
    )


#: A registry mirror for Docker Hub images, as an air-gapped cluster's profile would set it.
MIRROR = "registry.internal.example/dockerhub"


def _airgapped(prod: models.Cluster) -> models.Cluster:
    """The production profile on an air-gapped cluster: Docker Hub images through a mirror, the Medusa
    image from the private registry, another ingress controller."""
    medusa = models.ImageOverride(repository="registry.internal.example/shops/medusa", tag="2.10.3-1")
    return dataclasses.replace(prod, name="airgap", ingress_controller_namespace="ingress-system",
                               images=models.Images(registry=MIRROR, overrides=(("medusa", medusa),)))


def _cases() -> list[Case]:
    fleet = operations.load(REPO)
    clusters = {name: cluster for name, (cluster, _) in fleet.clusters.items()}
    clusters["airgap"] = _airgapped(clusters["prod"])
    cases = []
    for engine in ENGINES:
        chart = fleet.charts[engine]
        for plan in sorted(fleet.plans):
            for name in sorted(clusters):
                store = _store(engine, plan, name, github=plan != "small")
                cases.append(Case(engine, fleet.plans[plan], clusters[name], store, chart))
        # Suspension, on each profile, with the smallest plan.
        for name in sorted(clusters):
            store = _store(engine, "small", name, state="suspended")
            cases.append(Case(engine, fleet.plans["small"], clusters[name], store, chart))
    return cases


CASES = _cases()
ACTIVE = [c for c in CASES if not c.store.suspended]
SUSPENDED = [c for c in CASES if c.store.suspended]


def _ids(case: Case) -> str:
    return case.id


# --- running helm ---------------------------------------------------------------------------------


def helm_binary() -> pathlib.Path:
    """The helm binary harness/build.sh built at the version pinned in harness/versions.env."""
    if os.environ.get("STOREOPS_SKIP_CONTROLPLANE") == "1":
        pytest.skip("STOREOPS_SKIP_CONTROLPLANE=1: tests needing the harness binaries skipped")
    path = versions.binaries().helm
    if not path.exists():
        pytest.fail(f"{path} is not built; run `{versions.BUILD_COMMAND}`", pytrace=False)
    return path


@pytest.fixture(scope="session")
def helm() -> pathlib.Path:
    return helm_binary()


def _kube_version() -> str:
    return versions.read_versions().kubernetes.removeprefix("v")


def _helm(helm: pathlib.Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=120, check=False)
    if check:
        assert result.returncode == 0, f"helm {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def _values_file(tmp_path: pathlib.Path, text: str) -> pathlib.Path:
    path = tmp_path / f"values-{uuid.uuid4().hex[:8]}.yaml"
    path.write_text(text)
    return path


def _template_text(helm: pathlib.Path, case: Case, values: pathlib.Path) -> str:
    return _helm(
        helm, "template", case.store.app_name, str(REPO / "templates" / case.engine),
        "--namespace", case.namespace, "--values", str(values), "--kube-version", _kube_version(),
    ).stdout  # fmt: skip


def _documents(text: str) -> list[Manifest]:
    return [d for d in yaml.safe_load_all(text) if d]


@pytest.fixture(scope="module")
def rendered(helm: pathlib.Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """helm template output of every case, rendered once per module."""
    folder = tmp_path_factory.mktemp("values")
    return {case.id: _template_text(helm, case, _values_file(folder, case.values_text())) for case in CASES}


def _manifests(rendered: dict[str, str], case: Case) -> list[Manifest]:
    return _documents(rendered[case.id])


def _of_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def _one(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    found = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def _annotations(m: Manifest) -> dict[str, str]:
    return m["metadata"].get("annotations") or {}


def _wave(m: Manifest) -> int:
    return int(_annotations(m).get("argocd.argoproj.io/sync-wave", "0"))


def _pod_specs(manifests: list[Manifest]) -> list[tuple[str, Manifest]]:
    out = []
    for m in manifests:
        if m["kind"] in (*WORKLOADS, "Job"):
            out.append((f"{m['kind']}/{m['metadata']['name']}", m["spec"]["template"]["spec"]))
    return out


def _containers(pod: Manifest) -> list[Manifest]:
    return [*pod.get("initContainers", []), *pod["containers"]]


# --- lint, determinism ----------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_helm_lint_passes_strictly(helm: pathlib.Path, case: Case, tmp_path: pathlib.Path) -> None:
    values = _values_file(tmp_path, case.values_text())
    result = _helm(
        helm, "lint", "--strict", str(REPO / "templates" / case.engine), "--namespace", case.namespace,
        "--values", str(values), "--kube-version", _kube_version(),
    )  # fmt: skip
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_rendering_twice_gives_identical_manifests(
    helm: pathlib.Path, case: Case, rendered: dict[str, str], tmp_path: pathlib.Path
) -> None:
    again = _template_text(helm, case, _values_file(tmp_path, case.values_text()))
    assert again == rendered[case.id]
    assert len(_documents(again)) > 10


@pytest.mark.parametrize("engine", ENGINES)
def test_the_committed_example_values_render(helm: pathlib.Path, engine: str) -> None:
    """The generator's committed output for the example stores is accepted as it is."""
    files = sorted((REPO / "rendered").glob("*/values/*.yaml"))
    mine = [f for f in files if yaml.safe_load(f.read_text())["store"]["engine"] == engine]
    assert mine, f"no example {engine} store under rendered/"
    for values in mine:
        store_id = values.stem
        _helm(helm, "template", f"store-{store_id}", str(REPO / "templates" / engine),
              "--namespace", f"store-{store_id}", "--values", str(values))  # fmt: skip


# --- values schema --------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"quota": {"cpux": "1"}}, "cpux"),
        ({"ingress": {"tls": {"enabled": True}}}, "issuer"),
        ({"store": {"engine": "magento"}}, "engine"),
        ({"hots": "typo.example"}, "hots"),
        ({"suspended": "yes"}, "suspended"),
    ],
    ids=["unknown-nested-key", "tls-without-issuer", "wrong-engine", "unknown-top-key", "string-bool"],
)
def test_values_schema_rejects_bad_values(
    helm: pathlib.Path, engine: str, change: dict[str, Any], complaint: str, tmp_path: pathlib.Path
) -> None:
    case = next(c for c in ACTIVE if c.engine == engine and c.cluster.name == "local")
    values = _values_file(tmp_path, case.values_text())
    override = _values_file(tmp_path, yaml.safe_dump(change))
    result = _helm(
        helm, "template", "store-x", str(REPO / "templates" / engine), "--namespace", case.namespace,
        "-f", str(values), "-f", str(override), check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "schema" in result.stderr and complaint in result.stderr, result.stderr


# --- what the manifests say -----------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_quota_and_limits_come_from_the_plan(case: Case, rendered: dict[str, str]) -> None:
    manifests = _manifests(rendered, case)
    quota = _one(manifests, "ResourceQuota", "store-quota")
    assert quota["spec"]["hard"] == {
        "requests.cpu": case.plan.cpu,
        "requests.memory": case.plan.memory,
        "requests.storage": case.plan.storage,
    }
    limits = {item["type"]: item for item in _one(manifests, "LimitRange", "store-limits")["spec"]["limits"]}
    assert limits["Container"]["max"] == {"cpu": case.plan.cpu, "memory": case.plan.memory}
    assert limits["PersistentVolumeClaim"]["max"] == {"storage": case.plan.storage}


def _millis(quantity: str) -> int:
    return models.cpu_millis(quantity)


@pytest.mark.parametrize("case", ACTIVE, ids=_ids)
def test_everything_running_at_once_fits_the_plan(case: Case, rendered: dict[str, str]) -> None:
    """Every workload, every hook Job and every volume together stay inside the plan's quota."""
    manifests = _manifests(rendered, case)
    cpu = memory = 0
    for kind_name, pod in _pod_specs(manifests):
        replicas = 1
        for m in manifests:
            if f"{m['kind']}/{m['metadata']['name']}" == kind_name and m["kind"] in WORKLOADS:
                replicas = m["spec"]["replicas"]
        for container in pod["containers"]:
            requests = container["resources"]["requests"]
            cpu += replicas * _millis(str(requests["cpu"]))
            memory += replicas * models.memory_bytes(str(requests["memory"]))
        for container in pod.get("initContainers", []):
            assert container["resources"]["requests"], f"{kind_name} init container without requests"
    storage = sum(models.memory_bytes(p["spec"]["resources"]["requests"]["storage"]) for p in _pvcs(manifests))
    assert cpu <= case.plan.cpu_millis
    assert memory <= case.plan.memory_bytes
    assert storage <= models.memory_bytes(case.plan.storage)
    assert storage == models.memory_bytes(case.plan.database_volume) + models.memory_bytes(case.plan.content_volume)


def _pvcs(manifests: list[Manifest]) -> list[Manifest]:
    """The store's claims: each is an object of the chart (a StatefulSet's claim template names one of them)."""
    return list(_of_kind(manifests, "PersistentVolumeClaim"))


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_each_database_claim_is_an_object_of_the_chart_named_as_its_statefulset_names_it(
    case: Case, rendered: dict[str, str]
) -> None:
    """Kubernetes never changes a StatefulSet's claim templates: the claim of its pod 0, rendered as an
    object with the template's spec and the plan's size, is what a bigger plan patches. Same name: Argo CD
    adopts the claim an existing store's StatefulSet made. Same wave as the StatefulSet (0), which Argo CD
    applies after claims; the pod restarts when the size changes (storeops.io/volume-size)."""
    manifests = _manifests(rendered, case)
    (statefulset,) = _of_kind(manifests, "StatefulSet")
    (template,) = statefulset["spec"]["volumeClaimTemplates"]
    name = f"{template['metadata']['name']}-{statefulset['metadata']['name']}-0"
    claim = _one(manifests, "PersistentVolumeClaim", name)
    assert claim["spec"] == template["spec"]
    assert claim["spec"]["resources"]["requests"]["storage"] == case.plan.database_volume
    assert claim["metadata"]["labels"] == template["metadata"]["labels"]
    waves = {m["kind"]: m["metadata"].get("annotations", {}).get("argocd.argoproj.io/sync-wave", "0")
             for m in (claim, statefulset)}
    assert waves == {"PersistentVolumeClaim": "0", "StatefulSet": "0"}
    retention = statefulset["spec"]["persistentVolumeClaimRetentionPolicy"]
    assert retention == {"whenScaled": "Retain", "whenDeleted": "Retain"}
    pod = statefulset["spec"]["template"]
    assert pod["metadata"]["annotations"] == {"storeops.io/volume-size": case.plan.database_volume}
    assert {"name": "data", "mountPath": pod["spec"]["containers"][0]["volumeMounts"][0]["mountPath"]} in \
        pod["spec"]["containers"][0]["volumeMounts"]


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_the_web_pod_restarts_when_its_content_volume_grows_and_its_claim_is_in_its_wave(
    case: Case, rendered: dict[str, str]
) -> None:
    manifests = _manifests(rendered, case)
    web = [m for m in _of_kind(manifests, "Deployment") if any(
        v.get("persistentVolumeClaim") for v in m["spec"]["template"]["spec"].get("volumes", []))]
    assert len(web) == 1
    assert web[0]["spec"]["strategy"] == {"type": "Recreate"}
    annotations = web[0]["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {"storeops.io/volume-size": case.plan.content_volume}
    # The claim in the Deployment's wave: an earlier one would wait for a WaitForFirstConsumer claim
    # to be Bound, which needs the Deployment's pod.
    (claim,) = [v["persistentVolumeClaim"]["claimName"] for v in web[0]["spec"]["template"]["spec"]["volumes"]
                if v.get("persistentVolumeClaim")]
    wave = "argocd.argoproj.io/sync-wave"
    assert _one(manifests, "PersistentVolumeClaim", claim)["metadata"]["annotations"][wave] == \
        web[0]["metadata"]["annotations"][wave]


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_volumes_have_the_plan_sizes_and_the_cluster_storage_class(case: Case, rendered: dict[str, str]) -> None:
    pvcs = _pvcs(_manifests(rendered, case))
    sizes = sorted(p["spec"]["resources"]["requests"]["storage"] for p in pvcs)
    assert sizes == sorted([case.plan.database_volume, case.plan.content_volume])
    for pvc in pvcs:
        assert pvc["spec"].get("storageClassName") == case.cluster.storage_class
        assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_ingress_has_the_host_class_and_tls_of_the_profile(case: Case, rendered: dict[str, str]) -> None:
    ingress = _one(_manifests(rendered, case), "Ingress", "store")
    host = case.cluster.host_for(case.store)
    assert ingress["spec"]["ingressClassName"] == case.cluster.ingress_class
    assert [rule["host"] for rule in ingress["spec"]["rules"]] == [host]
    annotations = ingress["metadata"].get("annotations", {})
    if case.cluster.tls_issuer:
        assert ingress["spec"]["tls"] == [{"hosts": [host], "secretName": "store-tls"}]
        assert annotations["cert-manager.io/cluster-issuer"] == case.cluster.tls_issuer
    else:
        assert "tls" not in ingress["spec"]
        assert not any(key.startswith("cert-manager.io/") for key in annotations)
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    services = {s["metadata"]["name"]: s for s in _of_kind(_manifests(rendered, case), "Service")}
    assert backend["port"]["name"] in [p["name"] for p in services[backend["name"]]["spec"]["ports"]]


@pytest.mark.parametrize("case", SUSPENDED, ids=_ids)
def test_suspended_scales_every_workload_to_zero_and_keeps_volumes(case: Case, rendered: dict[str, str]) -> None:
    manifests = _manifests(rendered, case)
    workloads = [m for m in manifests if m["kind"] in WORKLOADS]
    assert workloads
    assert {f"{m['kind']}/{m['metadata']['name']}": m["spec"]["replicas"] for m in workloads} == {
        f"{m['kind']}/{m['metadata']['name']}": 0 for m in workloads
    }
    # Nothing runs: no Job, and a backup CronJob (a cluster with backups) only suspended.
    assert _of_kind(manifests, "Job") == []
    assert all(c["spec"]["suspend"] is True for c in _of_kind(manifests, "CronJob"))
    assert len(_pvcs(manifests)) == 2
    for statefulset in _of_kind(manifests, "StatefulSet"):
        assert statefulset["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"] == "Retain"


@pytest.mark.parametrize("case", ACTIVE, ids=_ids)
def test_active_store_runs_one_of_each_workload(case: Case, rendered: dict[str, str]) -> None:
    manifests = _manifests(rendered, case)
    assert {m["spec"]["replicas"] for m in manifests if m["kind"] in WORKLOADS} == {1}
    jobs = {m["metadata"]["name"] for m in _of_kind(manifests, "Job")}
    assert jobs == ({"credentials", "setup"} if case.engine == "woocommerce" else {"credentials", "store-bootstrap"})


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_no_credential_is_rendered(case: Case, rendered: dict[str, str]) -> None:
    manifests = _manifests(rendered, case)
    assert _of_kind(manifests, "Secret") == []
    for where, pod in _pod_specs(manifests):
        for container in _containers(pod):
            for env in container.get("env", []):
                if SECRET_ENV.search(env["name"]) and env["name"] not in SCRIPT_SETTINGS:
                    ref = env.get("valueFrom", {}).get("secretKeyRef", {})
                    # The store's own credentials, or (backup and restore pods) the S3 keys storeops copies in.
                    allowed = {"store-credentials", *(["storeops-backup"] if env["name"].startswith("AWS_") else [])}
                    assert ref.get("name") in allowed, f"{where} {container['name']} {env['name']}"
                    assert "value" not in env
                elif "value" in env and "://" in env["value"] and "@" in env["value"]:
                    # A connection URL: its password part may only be a reference to another variable.
                    assert re.search(r"://[^:/@]+:\$\([A-Z_]+\)@", env["value"]), f"{where} {env['name']}"


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_pods_are_locked_down(case: Case, rendered: dict[str, str]) -> None:
    for where, pod in _pod_specs(_manifests(rendered, case)):
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["runAsUser"] > 0, where
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert pod.get("hostNetwork") is not True and pod.get("hostPID") is not True, where
        token = pod.get("automountServiceAccountToken")
        if where == "Job/credentials":
            assert token is True and pod["serviceAccountName"] == "credentials-writer"
        else:
            assert token is False, where
        for container in _containers(pod):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, f"{where} {container['name']}"
            assert context["capabilities"] == {"drop": ["ALL"]}, f"{where} {container['name']}"
            assert context.get("privileged") is not True
            assert container["resources"]["limits"], f"{where} {container['name']}"


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_namespace_is_owned_and_labelled_like_the_application_says(case: Case, rendered: dict[str, str]) -> None:
    """The chart's Namespace overrides managedNamespaceMetadata, so it must carry the same labels."""
    namespace = _one(_manifests(rendered, case), "Namespace", case.namespace)
    app = rendering.application(case.store, case.cluster, "https://git.example.test/fleet.git")
    expected = app["spec"]["syncPolicy"]["managedNamespaceMetadata"]["labels"]
    labels = namespace["metadata"]["labels"]
    for key, value in expected.items():
        assert labels.get(key) == value, key
    assert set(POD_SECURITY_LABELS) <= set(labels)
    # In the Sync phase's first wave, where Argo CD applies the Namespace kind before any other.
    waves = [_wave(m) for m in _manifests(rendered, case) if "argocd.argoproj.io/hook" not in _annotations(m)]
    assert _wave(namespace) == min(waves)
    # The AppProject lets the store own exactly this cluster-scoped kind.
    project = rendering.app_project(case.store, case.cluster, "https://git.example.test/fleet.git")
    assert project["spec"]["clusterResourceWhitelist"] == [{"group": "", "kind": "Namespace"}]
    for m in _manifests(rendered, case):
        if m["kind"] != "Namespace":
            assert m["metadata"]["namespace"] == case.namespace, f"{m['kind']}/{m['metadata']['name']}"


#: Argo CD's install order of kinds within one wave (gitops-engine's sync tasks, after Helm's kind sorter).
KIND_ORDER = ["Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange", "ServiceAccount", "Secret", "ConfigMap",
              "PersistentVolumeClaim", "Role", "RoleBinding", "Service", "Deployment", "StatefulSet", "Job",
              "CronJob", "Ingress"]


@pytest.mark.parametrize("case", ACTIVE, ids=_ids)
def test_a_sync_of_a_new_store_takes_five_steps(case: Case, rendered: dict[str, str]) -> None:
    """Each (phase, wave) is a step of every sync: Argo CD applies it, waits until it is healthy and compares
    the whole store again. Five: the credentials (PreSync); everything that needs nothing healthy before it;
    the web component (after the database is ready); the Ingress (after the web component is); the setup
    (PostSync). What must come first within a step comes first by kind, which the chart's kinds allow."""
    manifests = _manifests(rendered, case)
    phases = {"PreSync": 0, None: 1, "PostSync": 2}
    steps: dict[tuple[int, int], list[str]] = {}
    for m in manifests:
        hook = _annotations(m).get("argocd.argoproj.io/hook")
        if hook == "Sync":  # a restore's Job, only when one is asked for
            continue
        assert m["kind"] in KIND_ORDER, m["kind"]
        steps.setdefault((phases[hook], _wave(m)), []).append(m["kind"])
    assert len(steps) == 5, sorted(steps)
    first, database, web, ingress, setup = (steps[k] for k in sorted(steps))
    assert "Job" in first and "StatefulSet" in database and "Deployment" in web and ingress == ["Ingress"]
    assert "Job" in setup
    # Within a step, a Job's ServiceAccount, Role and script come before it, the isolation before any workload.
    for kinds in steps.values():
        if "Job" in kinds:
            assert max((KIND_ORDER.index(k) for k in kinds if k != "Job"), default=-1) < KIND_ORDER.index("Job")
    for kind in ("NetworkPolicy", "ResourceQuota", "LimitRange"):
        assert kind in database
        assert KIND_ORDER.index(kind) < KIND_ORDER.index("StatefulSet")


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_a_sync_never_prunes_data_but_deleting_the_store_does(case: Case, rendered: dict[str, str]) -> None:
    """Prune=false guards the namespace and volumes against a sync; Argo CD's cascade delete ignores it
    (it skips only Delete=false and helm.sh/resource-policy: keep, which nothing here carries)."""
    manifests = _manifests(rendered, case)
    data = [m for m in manifests if m["kind"] in ("Namespace", "PersistentVolumeClaim")]
    assert sorted(m["kind"] for m in data) == ["Namespace", "PersistentVolumeClaim", "PersistentVolumeClaim"]
    for m in data:
        assert m["metadata"]["annotations"]["argocd.argoproj.io/sync-options"] == "Prune=false"
    for m in manifests:
        annotations = m["metadata"].get("annotations", {})
        assert "Delete=false" not in annotations.get("argocd.argoproj.io/sync-options", "")
        assert "helm.sh/resource-policy" not in annotations


@pytest.mark.parametrize("case", ACTIVE, ids=_ids)
def test_network_policies_admit_only_the_namespace_and_the_ingress_controller(
    case: Case, rendered: dict[str, str]
) -> None:
    policies = {p["metadata"]["name"]: p["spec"] for p in _of_kind(_manifests(rendered, case), "NetworkPolicy")}
    assert policies["default-deny-ingress"] == {
        "podSelector": {},
        "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"podSelector": {}}]}],
    }
    controller = policies["allow-ingress-controller"]
    web = "wordpress" if case.engine == "woocommerce" else "medusa"
    assert controller["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == web
    (rule,) = controller["ingress"]
    # The profile's controller namespace (traefik on the local profile), else the charts' default.
    namespace = case.cluster.ingress_controller_namespace or "ingress-nginx"
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}]
    assert rule["ports"] == [{"protocol": "TCP", "port": 80 if web == "wordpress" else 9000}]


@pytest.mark.parametrize("case", ACTIVE, ids=_ids)
def test_containers_run_the_images_of_the_profile(case: Case, rendered: dict[str, str]) -> None:
    """Every image the chart runs is the chart's default with the profile's mirror and overrides, and
    every one of them runs (an override that reached no container would be a silent no-op)."""
    expected = {str(image) for image in case.images().values()}
    running = {c["image"] for _, pod in _pod_specs(_manifests(rendered, case)) for c in _containers(pod)}
    assert running == expected
    if case.cluster.name == "local":
        local = {"storeops.local/python:3.13-trixie", "storeops.local/mariadb:11.8-trixie",
                 "storeops.local/wordpress:6.8-apache-trixie"} if case.engine == "woocommerce" else \
                {"storeops.local/python:3.13-trixie", "storeops.local/postgres:17-trixie",
                 "storeops.local/redis:8.0-trixie"}
        assert local <= running
    if case.cluster.name == "airgap":
        assert all(i.startswith(MIRROR + "/library/") or i.startswith("registry.internal.example/shops/")
                   for i in running), running
    if case.cluster.name == "prod":
        assert running == {str(image) for image in case.chart_images.values()}


@pytest.mark.parametrize("case", ACTIVE, ids=_ids)
def test_credentials_exist_before_anything_reads_them(case: Case, rendered: dict[str, str]) -> None:
    """The Job that writes the Secret is a PreSync hook after its RBAC (Argo CD: the same wave, where the kinds
    go in install order, Job last; Helm: a lower weight, since it orders one weight's hooks by name); readers run
    in the Sync phase or later."""
    manifests = _manifests(rendered, case)
    annotations = {f"{m['kind']}/{m['metadata']['name']}": m["metadata"].get("annotations", {}) for m in manifests}
    job = annotations["Job/credentials"]
    assert job["argocd.argoproj.io/hook"] == "PreSync"
    assert job["helm.sh/hook"] == "pre-install,pre-upgrade"
    for rbac in ("ServiceAccount", "Role", "RoleBinding", "ConfigMap"):
        hook = annotations[f"{rbac}/credentials-writer"]
        assert hook["argocd.argoproj.io/hook"] == "PreSync"
        assert hook["argocd.argoproj.io/sync-wave"] == job["argocd.argoproj.io/sync-wave"]
        assert int(hook["helm.sh/hook-weight"]) < int(job["helm.sh/hook-weight"])
    role = _one(manifests, "Role", "credentials-writer")
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["store-credentials"],
            "verbs": ["get", "patch"],
        },
    ]
    for where, _ in _pod_specs(manifests):
        if where != "Job/credentials":
            assert annotations[where].get("argocd.argoproj.io/hook") in (None, "PostSync"), where


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_storeops_may_get_the_credentials_secret_and_nothing_more(case: Case, rendered: dict[str, str]) -> None:
    """Also while suspended: the owner may ask for the credentials of a suspended store."""
    manifests = _manifests(rendered, case)
    role = _one(manifests, "Role", "storeops-credentials-reader")
    assert role["metadata"]["namespace"] == case.namespace
    assert role["rules"] == [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["store-credentials"],
                              "verbs": ["get"]}]
    binding = _one(manifests, "RoleBinding", "storeops-credentials-reader")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": "storeops-credentials-reader"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "storeops", "namespace": "storeops"}]


@pytest.mark.parametrize("engine", ENGINES)
def test_notes_name_the_credentials_secret(helm: pathlib.Path, engine: str, tmp_path: pathlib.Path) -> None:
    case = next(c for c in ACTIVE if c.engine == engine)
    values = _values_file(tmp_path, case.values_text())
    result = _helm(
        helm, "install", case.store.app_name, str(REPO / "templates" / engine), "--dry-run=client",
        "--namespace", case.namespace, "--values", str(values),
    )  # fmt: skip
    notes = result.stdout.split("NOTES:", 1)[1]
    assert f'Secret "store-credentials" in namespace {case.namespace}' in notes
    assert case.cluster.url_for(case.store) in notes


# --- against the real API server ------------------------------------------------------------------


def _kubectl(api: stack.Stack, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(api.binaries.kubectl), f"--kubeconfig={api.kubeconfig}", *args],
        input=input, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def _create_namespace(api: stack.Stack, case: Case, manifests: list[Manifest]) -> None:
    namespace = _one(manifests, "Namespace", case.namespace)
    result = _kubectl(api, "apply", "-f", "-", input=json.dumps(namespace))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_server_side_dry_run_accepts_every_manifest_without_pod_security_warnings(
    kube_apiserver: stack.Stack, case: Case, rendered: dict[str, str]
) -> None:
    manifests = _manifests(rendered, case)
    _create_namespace(kube_apiserver, case, manifests)
    # Strict field validation: an unknown or duplicate field is an error. Argo CD applies the stores' manifests
    # with Validate=false (the API server then drops such a field silently), so this is where one is caught.
    result = _kubectl(kube_apiserver, "apply", "--dry-run=server", "--validate=strict", "-o", "name", "-f", "-",
                      input=rendered[case.id])
    assert result.returncode == 0, result.stderr
    applied = set(result.stdout.split())
    assert len(applied) == len(manifests)
    # The namespace warns on the restricted profile: every pod template must meet it.
    assert "PodSecurity" not in result.stderr, result.stderr
    assert "Warning" not in result.stderr, result.stderr


def test_the_strict_dry_run_refuses_an_unknown_field(kube_apiserver: stack.Stack, rendered: dict[str, str]) -> None:
    """Control for the test above: a chart's manifest with a misspelt field fails the same check."""
    case = ACTIVE[0]
    manifests = _manifests(rendered, case)
    _create_namespace(kube_apiserver, case, manifests)
    service = json.loads(json.dumps(_of_kind(manifests, "Service")[0]))
    service["spec"]["selectr"] = service["spec"]["selector"]
    result = _kubectl(kube_apiserver, "apply", "--dry-run=server", "--validate=strict", "-f", "-",
                      input=json.dumps(service))
    assert result.returncode != 0
    assert 'unknown field "spec.selectr"' in result.stderr, result.stderr


def test_the_dry_run_does_report_pod_security_violations(kube_apiserver: stack.Stack, rendered: dict[str, str]) -> None:
    """Control for the test above: in a store namespace, a root workload draws the warning it checks for."""
    case = ACTIVE[0]
    _create_namespace(kube_apiserver, case, _manifests(rendered, case))
    labels = {"app": "root"}
    container = {"name": "c", "image": "busybox", "securityContext": {"runAsUser": 0}}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "root", "namespace": case.namespace},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
        },
    }
    result = _kubectl(kube_apiserver, "apply", "--dry-run=server", "-f", "-", input=json.dumps(deployment))
    assert result.returncode == 0, result.stderr
    assert 'would violate PodSecurity "restricted' in result.stderr


def _credentials_job_env(kube_apiserver: stack.Stack, helm: pathlib.Path, engine: str, tmp_path: pathlib.Path,
                         **values: object) -> tuple[Case, list[Manifest], pathlib.Path, dict[str, str]]:
    """A new store namespace with the chart's RBAC applied, and the shipped credentials script with the
    environment to run it as the credentials Job's ServiceAccount against the real API server."""
    store = _store(engine, "small", "local", state="active")
    store = dataclasses.replace(store, id=f"cred-{engine[:3]}-{uuid.uuid4().hex[:6]}", **values)
    fleet = operations.load(REPO)
    case = Case(engine, fleet.plans["small"], fleet.clusters["local"][0], store)
    manifests = _documents(_template_text(helm, case, _values_file(tmp_path, case.values_text())))
    _create_namespace(kube_apiserver, case, manifests)
    rbac = [m for m in manifests if m["kind"] in ("ServiceAccount", "Role", "RoleBinding")]
    result = _kubectl(kube_apiserver, "apply", "-f", "-", input="\n---\n".join(json.dumps(m) for m in rbac))
    assert result.returncode == 0, result.stderr

    job = _one(manifests, "Job", "credentials")["spec"]["template"]["spec"]
    env = {e["name"]: e["value"] for e in job["containers"][0]["env"] if "value" in e}
    script = tmp_path / "credentials.py"
    script.write_text(_one(manifests, "ConfigMap", "credentials-writer")["data"]["credentials.py"])
    account = tmp_path / "serviceaccount"
    account.mkdir()
    token = _kubectl(kube_apiserver, "create", "token", job["serviceAccountName"], "-n", case.namespace)
    assert token.returncode == 0, token.stderr
    (account / "token").write_text(token.stdout.strip())
    (account / "ca.crt").write_bytes(kube_apiserver.certs.ca_cert.read_bytes())
    run_env = {
        "PATH": os.environ.get("PATH", ""),
        **env,
        "POD_NAMESPACE": case.namespace,
        "SERVICEACCOUNT_DIR": str(account),
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": str(kube_apiserver.ports["apiserver"]),
    }
    return case, manifests, script, run_env


def _secret(kube_apiserver: stack.Stack, case: Case) -> Manifest:
    found = _kubectl(kube_apiserver, "get", "secret", "store-credentials", "-n", case.namespace, "-o", "json")
    assert found.returncode == 0, found.stderr
    decoded = json.loads(found.stdout)
    assert isinstance(decoded, dict)
    return decoded


@pytest.mark.parametrize("engine", ENGINES)
def test_credentials_script_creates_the_secret_once_and_never_rotates_it(
    kube_apiserver: stack.Stack, helm: pathlib.Path, engine: str, tmp_path: pathlib.Path
) -> None:
    """Run the shipped script as the chart's ServiceAccount against the real API server."""
    case, manifests, script, run_env = _credentials_job_env(kube_apiserver, helm, engine, tmp_path)
    store, env = case.store, run_env
    job = _one(manifests, "Job", "credentials")["spec"]["template"]["spec"]

    def run() -> str:
        done = subprocess.run([sys.executable, str(script)], env=run_env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def secret() -> Manifest:
        return _secret(kube_apiserver, case)

    assert "created" in run()
    first = secret()
    keys = env["SECRET_KEYS"].split()
    assert sorted(first["data"]) == sorted(keys)
    values = {k: base64.b64decode(v).decode() for k, v in first["data"].items()}
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{43}", v) for v in values.values())
    assert len(set(values.values())) == len(keys)
    assert first["metadata"]["labels"]["storeops.io/store"] == store.id

    assert "nothing changed" in run()
    assert secret()["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]

    # A key a newer chart needs is added; the others keep their values.
    dropped = keys[0]
    patched = _kubectl(kube_apiserver, "patch", "secret", "store-credentials", "-n", case.namespace,
                       "--type=json", "-p", json.dumps([{"op": "remove", "path": f"/data/{dropped}"}]))  # fmt: skip
    assert patched.returncode == 0, patched.stderr
    assert f"added keys {dropped}" in run()
    after = {k: base64.b64decode(v).decode() for k, v in secret()["data"].items()}
    assert {k: v for k, v in after.items() if k != dropped} == {k: v for k, v in values.items() if k != dropped}
    assert after[dropped] != values[dropped]

    # The token may touch this Secret only.
    subject = f"system:serviceaccount:{case.namespace}:{job['serviceAccountName']}"
    for verb, resource in [("get", "secrets/other"), ("list", "secrets"), ("delete", "secrets/store-credentials"),
                           ("get", "pods"), ("update", "secrets/store-credentials")]:  # fmt: skip
        answer = _kubectl(kube_apiserver, "auth", "can-i", verb, resource, "-n", case.namespace, f"--as={subject}")
        assert answer.stdout.strip() == "no", f"{verb} {resource}: {answer.stdout}"
    answer = _kubectl(kube_apiserver, "auth", "can-i", "get", "secrets/store-credentials", "-n", case.namespace,
                      f"--as={subject}")  # fmt: skip
    assert answer.stdout.strip() == "yes"


@pytest.mark.parametrize("engine", ENGINES)
def test_the_rotation_job_changes_the_admin_password_in_the_secret_only_after_the_shop_took_it(
    kube_apiserver: stack.Stack, helm: pathlib.Path, engine: str, tmp_path: pathlib.Path
) -> None:
    """The rotation Job's two credentials steps, run as its ServiceAccount against the real API server."""
    case, manifests, script, run_env = _credentials_job_env(kube_apiserver, helm, engine, tmp_path,
                                                            password_rotation=1)
    job = _one(manifests, "Job", "credentials-rotation")
    annotations = job["metadata"]["annotations"]
    assert annotations["argocd.argoproj.io/hook"] == "PostSync"
    setup = "setup" if engine == "woocommerce" else "store-bootstrap"
    # Before the shop's setup: a setup that fails (a plugin source that is down) does not hold it back.
    assert int(annotations["argocd.argoproj.io/sync-wave"]) < int(
        _one(manifests, "Job", setup)["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"])
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "credentials-writer" and pod["automountServiceAccountToken"] is False
    prepare, setter = pod["initContainers"]
    (finish,) = pod["containers"]
    assert [c["name"] for c in (prepare, setter, finish)] == ["prepare-rotation", "set-password", "finish-rotation"]
    # The shop's step gets the file and no API token; the credentials steps get the token.
    mounts = {c["name"]: {m["name"] for m in c["volumeMounts"]} for c in (prepare, setter, finish)}
    assert "api-token" not in mounts["set-password"] and "rotation" in mounts["set-password"]
    assert {"api-token", "rotation"} <= mounts["prepare-rotation"] & mounts["finish-rotation"]
    assert {"name": "rotation", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}} in pod["volumes"]
    assert setter["command"][:2] == ["sh", "-c"] and "-s \"$NEW_ADMIN_PASSWORD_FILE\"" in setter["command"][2]
    step_env = {e["name"]: e["value"] for e in prepare["env"] if "value" in e}
    assert step_env["ROTATION"] == "1"
    # The count is also on a managed object: Argo CD compares only those (not hooks), so a new count alone
    # makes the store OutOfSync and its sync runs the Job.
    record = _one(manifests, "ConfigMap", "credentials-rotation")
    assert record["data"] == {"rotation": "1"} and "argocd.argoproj.io/hook" not in (
        record["metadata"].get("annotations") or {})
    # Without a rotation asked for, no Job.
    plain = dataclasses.replace(case, store=dataclasses.replace(case.store, password_rotation=0))
    assert not [m for m in _documents(_template_text(helm, plain, _values_file(tmp_path, plain.values_text())))
                if m["metadata"]["name"] == "credentials-rotation"]

    file = tmp_path / "rotation" / "password"
    file.parent.mkdir()

    def run(mode: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(script), *([mode] if mode else [])], capture_output=True,
                              text=True, timeout=60, env={**run_env, **step_env, "ROTATION_FILE": str(file), **extra})

    def values() -> dict[str, str]:
        return {k: base64.b64decode(v).decode() for k, v in _secret(kube_apiserver, case)["data"].items()}

    assert run("").returncode == 0
    before = values()
    prepared = run("prepare-rotation")
    assert prepared.returncode == 0 and "ready for rotation 1" in prepared.stdout, prepared.stderr
    new = file.read_text()
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", new) and new != before["admin-password"]
    assert file.stat().st_mode & 0o077 == 0
    assert values() == {**before, "admin-password-next": new}  # the old one still works meanwhile
    # An interrupted attempt: the next one hands on the same password (the shop may have it already).
    file.unlink()
    assert run("prepare-rotation").returncode == 0 and file.read_text() == new
    # A file that is not the kept password: refused, nothing changes.
    file.write_text("something else")
    wrong = run("finish-rotation")
    assert wrong.returncode != 0 and "not the password the shop was given" in wrong.stderr
    assert values() == {**before, "admin-password-next": new}
    file.write_text(new)
    finished = run("finish-rotation")
    assert finished.returncode == 0 and "changed (rotation 1)" in finished.stdout, finished.stderr
    assert values() == {**before, "admin-password": new}
    secret = _secret(kube_apiserver, case)
    assert secret["metadata"]["annotations"]["storeops.io/admin-password-rotation"] == "1"
    # Every later sync runs the Job again: it finds the count reached and changes nothing.
    file.unlink()
    again = run("prepare-rotation")
    assert again.returncode == 0 and "nothing to change" in again.stdout and not file.exists()
    assert run("finish-rotation").stdout.startswith("no password was changed")
    assert _secret(kube_apiserver, case)["metadata"]["resourceVersion"] == secret["metadata"]["resourceVersion"]
    assert new not in prepared.stdout + prepared.stderr + finished.stdout + finished.stderr


# --- the Medusa bootstrap Job -------------------------------------------------------------------------

MEDUSA_ACTIVE = [c for c in ACTIVE if c.engine == "medusa"]
TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"


@pytest.mark.parametrize("case", MEDUSA_ACTIVE, ids=_ids)
def test_the_bootstrap_job_runs_the_apps_bootstrap_and_hands_on_the_publishable_key(
    case: Case, rendered: dict[str, str]
) -> None:
    manifests = _manifests(rendered, case)
    job = _one(manifests, "Job", "store-bootstrap")
    annotations = job["metadata"]["annotations"]
    assert annotations["argocd.argoproj.io/hook"] == "PostSync"
    assert annotations["helm.sh/hook"] == "post-install,post-upgrade"
    assert job["spec"]["backoffLimit"] <= 3 and job["spec"]["activeDeadlineSeconds"] <= 1200
    pod = job["spec"]["template"]["spec"]
    (bootstrap,) = pod["initContainers"]
    (publisher,) = pod["containers"]
    server = _one(manifests, "Deployment", "medusa")["spec"]["template"]["spec"]["containers"][0]
    images_of = case.images()
    # The built bootstrap, from the server's image and folder, with the server's environment.
    assert bootstrap["image"] == server["image"] == str(images_of["medusa"])
    assert bootstrap["workingDir"] == server["workingDir"] == "/app/.medusa/server"
    assert bootstrap["command"] == ["node_modules/.bin/medusa", "exec", "./src/scripts/bootstrap.js"]
    assert server["command"] == ["node_modules/.bin/medusa", "start"]
    env = {e["name"]: e for e in bootstrap["env"]}
    assert {e["name"] for e in server["env"]} <= set(env)
    assert env["ADMIN_EMAIL"]["value"] == case.store.owner.email
    assert env["ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "store-credentials", "key": "admin-password"}
    assert env["STORE_NAME"]["value"] == case.store.name
    assert (env["STORE_CURRENCY"]["value"], env["STORE_COUNTRIES"]["value"]) == ("usd", "us")
    assert env["STORE_BOOTSTRAP_OUTPUT"]["value"] == "/work/bootstrap.json"
    # The key goes to the Secret from the credentials image, with the only API token of the pod.
    assert publisher["image"] == str(images_of["credentials"])
    assert publisher["command"] == ["python3", "/scripts/publishable_key.py"]
    assert {e["name"]: e.get("value") for e in publisher["env"]}["SECRET_NAME"] == "store-credentials"
    assert pod["automountServiceAccountToken"] is False and pod["serviceAccountName"] == "store-bootstrap"
    assert [m["mountPath"] for m in bootstrap["volumeMounts"] if m["mountPath"] == TOKEN_PATH] == []
    assert TOKEN_PATH in [m["mountPath"] for m in publisher["volumeMounts"]]
    script = _one(manifests, "ConfigMap", "store-bootstrap")["data"]
    assert script == {"publishable_key.py": (REPO / "templates/medusa/files/publishable_key.py").read_text()}
    role = _one(manifests, "Role", "store-bootstrap")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["store-credentials"],
                              "verbs": ["get", "patch"]}]  # fmt: skip
    binding = _one(manifests, "RoleBinding", "store-bootstrap")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "store-bootstrap", "namespace": case.namespace}]
    # Readiness is Medusa's own health endpoint.
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert server[probe]["httpGet"]["path"] == "/health", probe


# --- the WooCommerce setup Job --------------------------------------------------------------------

WOO_ACTIVE = [c for c in ACTIVE if c.engine == "woocommerce"]
DEFAULT_PLUGIN_SOURCE = "https://downloads.wordpress.org/plugin/woocommerce.{version}.zip"
CHART_WORDPRESS_USER = 33


@pytest.mark.parametrize("case", WOO_ACTIVE, ids=_ids)
def test_the_setup_job_runs_setup_php_with_the_wordpress_images_php(case: Case, rendered: dict[str, str]) -> None:
    manifests = _manifests(rendered, case)
    job = _one(manifests, "Job", "setup")
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    wordpress = _one(manifests, "Deployment", "wordpress")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == wordpress["image"] == str(case.images()["wordpress"])
    assert container["command"] == ["php", "/scripts/setup.php"] and "args" not in container
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    script = _one(manifests, "ConfigMap", "setup")["data"]
    assert script == {"setup.php": (REPO / "templates/woocommerce/files/setup.php").read_text()}
    # Bounded: retries, a deadline, and the permanent failures (2, 3) end the Job at once.
    assert job["spec"]["backoffLimit"] <= 3 and job["spec"]["activeDeadlineSeconds"] <= 1200
    assert job["spec"]["podFailurePolicy"]["rules"] == [{"action": "FailJob", "onExitCodes": {
        "containerName": "setup", "operator": "In", "values": [2, 3]}}]
    assert pod["restartPolicy"] == "Never"
    # The content volume (ReadWriteOnce) and the node of WordPress, as the web server has them.
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["content"] == "/var/www/html"
    claims = {v["name"]: v.get("persistentVolumeClaim", {}).get("claimName") for v in pod["volumes"]}
    assert claims["content"] == "wordpress-content"
    (term,) = pod["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == "wordpress"
    # The store's values reach PHP as environment variables, never as arguments.
    env = {e["name"]: e for e in container["env"]}
    assert env["STORE_NAME"]["value"] == case.store.name
    assert env["ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "store-credentials",
                                                                   "key": "admin-password"}
    source = case.cluster.woocommerce.plugin_source if case.cluster.woocommerce else None
    assert env["WOOCOMMERCE_SOURCE"]["value"] == (source or DEFAULT_PLUGIN_SOURCE)
    if case.cluster.name == "local":
        assert env["WOOCOMMERCE_SOURCE"]["value"].startswith("http://127.0.0.1:9/")


@pytest.mark.parametrize("case", [c for c in CASES if c.engine == "woocommerce"], ids=_ids)
def test_wordpress_core_is_upgraded_by_the_wordpress_image_before_wordpress_starts(
    case: Case, rendered: dict[str, str]
) -> None:
    """The init container runs files/core-upgrade.sh as it is (tests/integration/test_core_upgrade.py
    runs the same file) with the image WordPress runs, on the content volume, before Apache."""
    pod = _one(_manifests(rendered, case), "Deployment", "wordpress")["spec"]["template"]["spec"]
    (upgrade,) = pod["initContainers"]
    (wordpress,) = pod["containers"]
    assert upgrade["name"] == "core-upgrade"
    assert upgrade["image"] == wordpress["image"] == str(case.images()["wordpress"])
    script = (REPO / "templates/woocommerce/files/core-upgrade.sh").read_text()
    assert upgrade["command"] == ["sh", "-c", script, "core-upgrade.sh", "/usr/src/wordpress", "/var/www/html"]
    assert "args" not in upgrade
    assert upgrade["terminationMessagePolicy"] == "FallbackToLogsOnError"
    mounts = [(m["name"], m["mountPath"], m.get("readOnly", False)) for m in upgrade["volumeMounts"]]
    assert mounts == [("content", "/var/www/html", False)]
    assert upgrade["securityContext"]["readOnlyRootFilesystem"] is True
    # As www-data: the files it writes belong to the user WordPress runs as.
    assert pod["securityContext"]["runAsUser"] == CHART_WORDPRESS_USER


def test_a_restore_runs_before_the_core_upgrade(helm: pathlib.Path, tmp_path: pathlib.Path) -> None:
    case = next(c for c in ACTIVE if c.engine == "woocommerce" and c.cluster.name == "local")
    values = case.values() | {"restore": {"from": "old-shop/20261101T000000Z-manual"}}
    values["backup"] = {"s3": {"endpoint": "http://objects.example:8333", "bucket": "backups"}}
    text = _template_text(helm, case, _values_file(tmp_path, yaml.safe_dump(values)))
    pod = _one(_documents(text), "Deployment", "wordpress")["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["wait-for-restore", "core-upgrade"]


@pytest.mark.parametrize("case", [c for c in ACTIVE if c.cluster.name == "local"], ids=_ids)
def test_the_status_reader_may_list_the_stores_pods_and_nothing_more(case: Case, rendered: dict[str, str]) -> None:
    manifests = _manifests(rendered, case)
    roles = [m for m in _of_kind(manifests, "Role") if m["metadata"]["name"] == "storeops-status-reader"]
    if case.engine != "woocommerce":
        assert roles == []
        return
    assert roles[0]["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]
    binding = _one(manifests, "RoleBinding", "storeops-status-reader")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "storeops", "namespace": "storeops"}]


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"setup": {"pluginSource": "file:///srv/woocommerce.zip"}}, "pluginSource"),
        ({"setup": {"pluginSource": ""}}, "pluginSource"),
        ({"setup": {"backoffLimit": 50}}, "backoffLimit"),
        ({"setup": {"activeDeadlineSeconds": 0}}, "activeDeadlineSeconds"),
        ({"setup": {"image": {"repository": "wordpress", "tag": "cli"}}}, "image"),
    ],
    ids=["not-http", "empty-source", "unbounded-retries", "no-deadline", "no-separate-image"],
)
def test_values_schema_rejects_bad_setup_values(
    helm: pathlib.Path, change: dict[str, Any], complaint: str, tmp_path: pathlib.Path
) -> None:
    case = WOO_ACTIVE[0]
    values = _values_file(tmp_path, case.values_text())
    override = _values_file(tmp_path, yaml.safe_dump(change))
    result = _helm(
        helm, "template", "store-x", str(REPO / "templates" / "woocommerce"), "--namespace", case.namespace,
        "-f", str(values), "-f", str(override), check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "schema" in result.stderr and complaint in result.stderr, result.stderr
