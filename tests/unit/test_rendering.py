"""Rendering: golden files for whole trees, and the properties each object must have."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest
import yaml

from generator import constants, fleet, operations, rendering, trees

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden"


def assert_matches_tree(rendered: dict[str, str], expected_root: Path) -> None:
    """Compare with the files under ``expected_root``; print a unified diff of every difference."""
    if os.environ.get("STOREOPS_UPDATE_GOLDEN") == "1":
        trees.write_rendered(expected_root, rendered)
    expected = {p: c.decode() for p, c in trees.read_rendered(expected_root).items()}
    diff = []
    for path in sorted(set(rendered) | set(expected)):
        if rendered.get(path) != expected.get(path):
            diff.extend(difflib.unified_diff(expected.get(path, "").splitlines(keepends=True),
                                             rendered.get(path, "").splitlines(keepends=True),
                                             f"expected/{path}", f"rendered/{path}"))
    assert not diff, "rendered output differs from the golden files " \
                     "(STOREOPS_UPDATE_GOLDEN=1 rewrites them):\n" + "".join(diff)


def test_example_repository_matches_its_committed_output() -> None:
    assert_matches_tree(operations.render_files(operations.load(REPO)), REPO)


def test_edge_cases_match_golden_files() -> None:
    assert_matches_tree(operations.render_files(operations.load(GOLDEN / "edge")), GOLDEN / "edge")


def test_rendering_is_byte_for_byte_deterministic() -> None:
    files = trees.read_inputs(REPO)
    first = operations.render_files(fleet.build(files))
    # Same inputs read in another order give the same bytes.
    second = operations.render_files(fleet.build(dict(reversed(list(files.items())))))
    assert first == second


def targets() -> dict[str, rendering.Target]:
    return {t.store.id: t for t in operations.load(REPO).targets()}


def docs(store_id: str) -> tuple[dict, dict, dict]:  # type: ignore[type-arg]
    target = targets()[store_id]
    files = rendering.render_store(target)
    project, app = yaml.safe_load_all(files[rendering.app_path(target.cluster.name, store_id)])
    values = yaml.safe_load(files[rendering.values_path(target.cluster.name, store_id)])
    return project, app, values


def test_application_points_at_the_chart_with_the_values_file() -> None:
    _, app, _ = docs("acme-outdoor")
    source = app["spec"]["source"]
    assert source["path"] == "templates/woocommerce"
    assert source["helm"]["valueFiles"] == ["../../rendered/local/values/acme-outdoor.yaml"]
    # The values file path is inside the repository when resolved from the chart directory.
    assert os.path.normpath(os.path.join(source["path"], source["helm"]["valueFiles"][0])) == \
        "rendered/local/values/acme-outdoor.yaml"
    assert source["repoURL"] == "git://127.0.0.1:9418/storeops.git"
    assert app["spec"]["destination"] == {"server": "https://kubernetes.default.svc", "namespace": "store-acme-outdoor"}
    assert app["metadata"]["finalizers"] == [constants.RESOURCES_FINALIZER]
    policy = app["spec"]["syncPolicy"]
    assert policy["automated"] == {"prune": True, "selfHeal": True}
    assert "CreateNamespace=true" in policy["syncOptions"]
    # Argo CD's client-side validation is off (its cost per applied object); tests/integration/test_charts.py
    # checks the charts' manifests under strict field validation.
    assert "Validate=false" in policy["syncOptions"]
    assert "ServerSideApply=true" in policy["syncOptions"]
    assert policy["managedNamespaceMetadata"]["labels"][constants.POD_SECURITY_ENFORCE] == "baseline"
    assert policy["retry"]["limit"] > 0


def test_the_root_application_applies_only_the_applications_a_commit_changed() -> None:
    fleet = operations.load(REPO)
    project, root = rendering.root_objects(fleet.clusters["local"][0], "git://127.0.0.1:9418/storeops.git")
    assert (project["kind"], root["kind"]) == ("AppProject", "Application")
    policy = root["spec"]["syncPolicy"]
    assert policy["automated"] == {"prune": True, "selfHeal": True}
    # Otherwise every sync of the root applies every store's Application and project again.
    assert "ApplyOutOfSyncOnly=true" in policy["syncOptions"]
    assert "Validate=false" in policy["syncOptions"]
    assert "finalizers" not in root["metadata"]


def test_labels_and_annotations_select_and_link_the_store() -> None:
    _, app, _ = docs("acme-outdoor")
    labels = app["metadata"]["labels"]
    assert labels[constants.LABEL_STORE] == "acme-outdoor"
    assert labels[constants.LABEL_ENGINE] == "woocommerce"
    assert labels[constants.LABEL_CLUSTER] == "local"
    assert labels[constants.LABEL_OWNER] == "janedoe"
    assert labels[constants.LABEL_INSTANCE] == "store-acme-outdoor"
    annotations = app["metadata"]["annotations"]
    assert annotations[constants.ANNOTATION_STORE_LINK] == "http://acme-outdoor.stores.localtest.me"
    assert annotations[constants.ANNOTATION_MANIFEST_PATHS].split(";") == [
        "/templates/woocommerce", "/templates/storeops-lib", "/rendered/local/values/acme-outdoor.yaml",
        "/templates/plans.yaml"]


def test_project_confines_the_store_to_its_namespace() -> None:
    project, app, _ = docs("nordic-knits")
    assert app["spec"]["project"] == project["metadata"]["name"] == "store-nordic-knits"
    assert project["spec"]["destinations"] == [{"name": "prod-eu-1", "namespace": "store-nordic-knits"}]
    assert project["spec"]["sourceRepos"] == [app["spec"]["source"]["repoURL"]]
    assert project["spec"]["clusterResourceWhitelist"] == [{"group": "", "kind": "Namespace"}]


def test_values_follow_cluster_and_plan() -> None:
    _, _, values = docs("nordic-knits")
    assert values["host"] == "shop.nordicknits.example"
    assert values["url"] == "https://shop.nordicknits.example"
    assert values["ingress"] == {"className": "nginx", "tls": {"enabled": True, "issuer": "letsencrypt-prod"}}
    assert values["persistence"]["storageClassName"] == "gp3"
    assert values["quota"] == {"cpu": "4", "memory": "8Gi", "storage": "120Gi"}
    assert values["suspended"] is False
    _, _, local = docs("bookworm")
    assert local["ingress"]["tls"] == {"enabled": False}
    assert "storageClassName" not in local["persistence"]
    assert constants.LABEL_OWNER not in yaml.safe_load_all(
        rendering.render_store(targets()["bookworm"])["rendered/local/apps/bookworm.yaml"]).__next__()["metadata"][
        "labels"]


def test_suspended_store_keeps_its_application_and_scales_to_zero() -> None:
    _, app, values = docs("coffee-lab")
    assert values["suspended"] is True
    assert app["metadata"]["labels"][constants.LABEL_STATE] == "suspended"
    assert app["spec"]["syncPolicy"]["automated"]["prune"] is True


def test_repo_url_override_reaches_project_and_application() -> None:
    target = targets()["acme-outdoor"]
    files = rendering.render_store(target, repo_url="file:///tmp/remote.git")
    project, app = yaml.safe_load_all(files["rendered/local/apps/acme-outdoor.yaml"])
    assert app["spec"]["source"]["repoURL"] == "file:///tmp/remote.git"
    assert project["spec"]["sourceRepos"] == ["file:///tmp/remote.git"]


@pytest.mark.parametrize("path", ["rendered/local/apps/acme-outdoor.yaml", "rendered/local/values/acme-outdoor.yaml"])
def test_each_file_names_its_sources(path: str) -> None:
    content = (REPO / path).read_text()
    assert content.startswith("# Generated by storeops from stores/acme-outdoor.yaml and clusters/local.yaml.\n")
