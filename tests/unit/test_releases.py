"""Released chart versions: the snapshot, stores pinned to it, and what Argo CD regenerates per commit."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from generator import constants, errors, operations, releases, releasing, rendering
from generator.errors import StoreopsError
from harness import examples

#: A commit that changes one other store (a medusa store on the same cluster).
CHANGES_ONE_STORE = "rendered/local/values/bookworm.yaml"


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    return examples.example_repo(tmp_path / "repo")


def pin(root: Path, store_id: str, version: str | None) -> None:
    path = root / constants.STORES_DIR / f"{store_id}.yaml"
    lines = [line for line in path.read_text().splitlines(keepends=True) if not line.startswith("chartVersion:")]
    path.write_text("".join(lines) + (f"chartVersion: {version}\n" if version else ""))


def bump(root: Path, engine: str, version: str) -> None:
    chart = root / rendering.chart_path(engine) / "Chart.yaml"
    text = chart.read_text()
    old = yaml.safe_load(text)["version"]
    chart.write_text(text.replace(f"\nversion: {old}\n", f"\nversion: {version}\n"))


def application(root: Path, store_id: str) -> dict:  # type: ignore[type-arg]
    target = operations.load(root).target(store_id)
    files = rendering.render_store(target)
    return list(yaml.safe_load_all(files[rendering.app_path(target.cluster.name, store_id)]))[1]  # type: ignore[no-any-return]


def regenerates(app: dict, changed: list[str]) -> bool:  # type: ignore[type-arg]
    """Whether Argo CD renders ``app`` again for a commit changing ``changed``: a changed file is one of its
    manifest-generate-paths or lies under one (paths from the repository root)."""
    watched = [p.strip("/") for p in app["metadata"]["annotations"][constants.ANNOTATION_MANIFEST_PATHS].split(";")]
    return any(f == p or f.startswith(p + "/") for f in changed for p in watched)


def test_a_release_is_the_chart_and_the_library_as_helm_loads_them(repo: Path) -> None:
    version = releasing.release(repo, "medusa")
    assert version == yaml.safe_load((repo / "templates/medusa/Chart.yaml").read_text())["version"]
    folder = repo / releases.release_dir("medusa", version)
    chart, library = folder / "medusa", folder / releases.LIBRARY
    assert (chart / "templates").is_dir() and (library / "templates").is_dir()
    for name in ("Chart.yaml", "values.yaml"):
        assert (chart / name).read_bytes() == (repo / "templates/medusa" / name).read_bytes()
    # The chart keeps its relative symlink, which inside the release reaches the release's own library.
    link = chart / "charts" / releases.LIBRARY
    assert link.is_symlink() and os.readlink(link) == "../../storeops-lib"
    assert link.resolve() == library.resolve()
    # What .helmignore leaves out of the chart (the store app's source) is not in the release.
    assert (repo / "templates/medusa/app").is_dir() and not (chart / "app").exists()
    assert operations.validate(repo)[1] == []


def test_a_version_is_released_once(repo: Path) -> None:
    releasing.release(repo, "woocommerce")
    with pytest.raises(StoreopsError, match="already released"):
        releasing.release(repo, "woocommerce")
    bump(repo, "woocommerce", "0.2.0")
    assert releasing.release(repo, "woocommerce") == "0.2.0"
    with pytest.raises(StoreopsError, match="no engine"):
        releasing.release(repo, "shopify")


@pytest.mark.parametrize("edit", ["edit", "add", "remove"])
def test_an_edited_release_is_a_problem(repo: Path, edit: str) -> None:
    version = releasing.release(repo, "woocommerce")
    folder = repo / releases.release_dir("woocommerce", version)
    target = folder / releases.LIBRARY / "templates" / "_storeops.tpl"
    if edit == "edit":
        target.write_text(target.read_text() + "{{/* changed */}}\n")
    elif edit == "add":
        target = folder / "woocommerce" / "templates" / "extra.yaml"
        target.write_text("kind: ConfigMap\n")
    else:
        target.unlink()
    _, problems = operations.validate(repo)
    relative = target.relative_to(repo).as_posix()
    assert [(p.path, p.code) for p in problems] == [(relative, errors.RELEASE)]
    assert {"edit": "was edited", "add": "was added", "remove": "was removed"}[edit] in problems[0].message


def test_a_release_without_its_digest_is_a_problem(repo: Path) -> None:
    version = releasing.release(repo, "woocommerce")
    (repo / releases.digest_path("woocommerce", version)).unlink()
    _, problems = operations.validate(repo)
    assert [p.path for p in problems] == [releases.release_dir("woocommerce", version)]


def test_unpinned_stores_render_exactly_as_before_a_release(repo: Path) -> None:
    before = operations.render_files(operations.load(repo))
    releasing.release(repo, "woocommerce")
    assert operations.render_files(operations.load(repo)) == before


def test_a_pinned_store_renders_from_its_release(repo: Path) -> None:
    version = releasing.release(repo, "woocommerce")
    unpinned = application(repo, "acme-outdoor")
    pin(repo, "acme-outdoor", version)
    app = application(repo, "acme-outdoor")
    source = app["spec"]["source"]
    assert source["path"] == f"templates/releases/woocommerce/{version}/woocommerce"
    # The values file, resolved from the chart folder as Helm does, is the store's, inside the repository.
    assert os.path.normpath(os.path.join(source["path"], source["helm"]["valueFiles"][0])) == \
        "rendered/local/values/acme-outdoor.yaml"
    assert app["metadata"]["annotations"][constants.ANNOTATION_MANIFEST_PATHS].split(";") == [
        f"/templates/releases/woocommerce/{version}", "/rendered/local/values/acme-outdoor.yaml",
        "/templates/plans.yaml"]
    # Nothing else of the Application changes: a move is the chart path and what Argo CD watches.
    for key in ("path", "helm"):
        source.pop(key), unpinned["spec"]["source"].pop(key)
    app["metadata"]["annotations"].pop(constants.ANNOTATION_MANIFEST_PATHS)
    unpinned["metadata"]["annotations"].pop(constants.ANNOTATION_MANIFEST_PATHS)
    assert app == unpinned


def test_each_pinned_version_is_regenerated_only_by_its_own_release(repo: Path) -> None:
    releasing.release(repo, "woocommerce")
    old = [p for p in examples_files(repo) if p.startswith(releases.release_dir("woocommerce", "0.1.0") + "/")]
    bump(repo, "woocommerce", "0.2.0")
    releasing.release(repo, "woocommerce")
    new = [p for p in examples_files(repo) if p.startswith(releases.release_dir("woocommerce", "0.2.0") + "/")]
    follower = application(repo, "acme-outdoor")
    pin(repo, "acme-outdoor", "0.1.0")
    pin(repo, "nordic-knits", "0.2.0")
    at_old, at_new = application(repo, "acme-outdoor"), application(repo, "nordic-knits")
    working = ["templates/woocommerce/templates/wordpress.yaml", "templates/storeops-lib/templates/_storeops.tpl"]
    # A commit that releases 0.2.0 (or changes the working chart, the library, or another store) costs the
    # store pinned to 0.1.0 nothing; its own release, values and the plans do.
    assert old and new
    assert not regenerates(at_old, new)
    assert not regenerates(at_old, working[:1]) and not regenerates(at_old, working[1:])
    assert not regenerates(at_old, [CHANGES_ONE_STORE])
    assert all(regenerates(at_old, [path]) for path in old)
    assert regenerates(at_old, ["rendered/local/values/acme-outdoor.yaml"])
    assert regenerates(at_old, [constants.PLANS_FILE])
    assert regenerates(at_new, new[:1]) and regenerates(at_new, ["rendered/prod/values/nordic-knits.yaml"])
    assert not regenerates(at_new, old) and not regenerates(at_new, working)
    assert not regenerates(at_new, ["rendered/local/values/acme-outdoor.yaml"])
    # A store that follows the working chart is regenerated by working-chart and library changes, as before,
    # and not by a release.
    assert regenerates(follower, working[:1]) and regenerates(follower, working[1:])
    assert not regenerates(follower, new) and not regenerates(follower, [CHANGES_ONE_STORE])


def examples_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink())


def test_a_version_that_is_not_released_is_a_problem(repo: Path) -> None:
    pin(repo, "acme-outdoor", "0.1.0")
    _, problems = operations.validate(repo)
    assert [(p.path, p.field, p.code) for p in problems] == [
        ("stores/acme-outdoor.yaml", "chartVersion", errors.RELEASE)]
    assert "no release '0.1.0'" in problems[0].message and "released: none yet" in problems[0].message
    releasing.release(repo, "woocommerce")
    assert operations.validate(repo)[1] == []
    # A medusa release is no woocommerce release.
    pin(repo, "acme-outdoor", "9.9.9")
    assert "released: 0.1.0" in operations.validate(repo)[1][0].message


def test_a_pinned_store_takes_its_default_images_from_its_release(repo: Path) -> None:
    releasing.release(repo, "woocommerce")
    pin(repo, "acme-outdoor", "0.1.0")
    values = repo / "templates/woocommerce/values.yaml"
    values.write_text(values.read_text().replace("tag: ", "tag: next-"))
    loaded = operations.load(repo)
    pinned, follower = loaded.target("acme-outdoor").store, loaded.target("nordic-knits").store
    assert loaded.chart_images(pinned) == loaded.releases[("woocommerce", "0.1.0")]
    assert loaded.chart_images(follower) == loaded.charts["woocommerce"]
    assert all(not i.tag.startswith("next-") for i in loaded.chart_images(pinned).values())
    assert all(i.tag.startswith("next-") for i in loaded.chart_images(follower).values())


@pytest.mark.parametrize(("path", "expected"), [
    ("templates/releases/woocommerce/0.2.0/woocommerce/values.yaml", ("woocommerce", "0.2.0")),
    ("templates/releases/medusa/1.0.0-rc.1/medusa/values.yaml", ("medusa", "1.0.0-rc.1")),
    ("templates/releases/medusa/1.0.0/woocommerce/values.yaml", None),
    ("templates/releases/medusa/latest/medusa/values.yaml", None),
    ("templates/releases/shop/1.0.0/shop/values.yaml", None),
    ("templates/woocommerce/values.yaml", None),
])
def test_release_values_paths(path: str, expected: tuple[str, str] | None) -> None:
    assert releases.of_values_path(path, ("woocommerce", "medusa")) == expected


def test_removing_a_whole_release_is_no_edit_but_editing_one_is() -> None:
    base = {"templates/releases/woocommerce/0.1.0/woocommerce/Chart.yaml": b"a",
            "templates/releases/woocommerce/0.1.0.sha256": b"d",
            "templates/releases/woocommerce/0.2.0/woocommerce/Chart.yaml": b"b",
            "templates/releases/woocommerce/0.2.0.sha256": b"e"}
    later = {"templates/releases/woocommerce/0.2.0/woocommerce/Chart.yaml": b"B",
             "templates/releases/woocommerce/0.2.0.sha256": b"e"}
    assert [p.path for p in releases.changed_at_base(base, later)] == [
        "templates/releases/woocommerce/0.2.0/woocommerce/Chart.yaml"]
    partial = {"templates/releases/woocommerce/0.1.0.sha256": b"d"}
    assert [p.path for p in releases.changed_at_base(base, partial)] == [
        "templates/releases/woocommerce/0.1.0/woocommerce/Chart.yaml"]
