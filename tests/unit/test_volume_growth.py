"""A store's volumes follow its plan: they grow only on a cluster whose StorageClass can expand them,
and never shrink."""

from __future__ import annotations

from pathlib import Path

from generator import errors, fleet, trees

REPO = Path(__file__).resolve().parents[2]


def _files() -> dict[str, bytes | str]:
    return dict(trees.read_inputs(REPO))


def _text(files: dict[str, bytes | str], path: str) -> str:
    content = files[path]
    return content.decode() if isinstance(content, bytes) else content


def _replace(files: dict[str, bytes | str], path: str, old: str, new: str) -> dict[str, bytes | str]:
    text = _text(files, path)
    assert old in text, f"{old!r} not in {path}"
    return {**files, path: text.replace(old, new)}


def _changes(before: dict[str, bytes | str], after: dict[str, bytes | str]) -> list[errors.Problem]:
    return fleet.immutable_changes(fleet.build(before), fleet.build(after))


def test_a_bigger_plan_on_a_cluster_that_cannot_expand_volumes_is_refused_with_names_sizes_and_why() -> None:
    before = _files()
    assert "allowVolumeExpansion" not in _text(before, "clusters/local.yaml")
    after = _replace(before, "stores/bookworm.yaml", "plan: medium", "plan: large")
    problems = _changes(before, after)
    assert [(p.path, p.line, p.field, p.code) for p in problems] == [
        ("stores/bookworm.yaml", 5, "plan", errors.VOLUME_GROWTH)]
    assert problems[0].message == (
        "plan 'medium' -> 'large' would grow store 'bookworm''s volumes (database 10Gi -> 40Gi, content 10Gi -> "
        "40Gi), but cluster 'local' cannot grow a volume in place: its StorageClass (the cluster's default) does "
        "not allow volume expansion (clusters/local.yaml has no allowVolumeExpansion: true), so Kubernetes would "
        "refuse the claims' new size; keep the plan, or enable expansion on the StorageClass and say so in the "
        "cluster profile")
    # The whole change is refused the same way (what `storeops validate --base` and the API use).
    assert [p.code for p in fleet.change_problems(fleet.build(before), fleet.build(after))] == [errors.VOLUME_GROWTH]


def test_a_bigger_plan_grows_the_volumes_where_the_class_can_expand_them() -> None:
    before = _files()
    assert "allowVolumeExpansion: true" in _text(before, "clusters/prod.yaml")
    after = _replace(before, "stores/coffee-lab.yaml", "plan: small", "plan: large")
    assert _changes(before, after) == []
    # The same growth on the local cluster, once its profile says its class can expand.
    local = _replace(before, "clusters/local.yaml", "ingressClassName: traefik\n",
                     "ingressClassName: traefik\nallowVolumeExpansion: true\n")
    assert _changes(local, _replace(local, "stores/bookworm.yaml", "plan: medium", "plan: large")) == []


def test_a_plan_whose_sizes_grow_names_each_store_on_a_cluster_that_cannot_expand() -> None:
    before = _files()
    after = _replace(before, "templates/plans.yaml", "      database: 10Gi", "      database: 12Gi")
    problems = _changes(before, after)
    # medium: bookworm on local (refused); no medium store on prod.
    assert [(p.path, p.code) for p in problems] == [("stores/bookworm.yaml", errors.VOLUME_GROWTH)]
    assert "plan 'medium' changed would grow store 'bookworm''s volumes (database 10Gi -> 12Gi)" in problems[0].message


def test_a_named_storage_class_is_named_in_the_refusal() -> None:
    before = _replace(_files(), "clusters/prod.yaml", "allowVolumeExpansion: true\n", "")
    after = _replace(before, "stores/coffee-lab.yaml", "plan: small", "plan: medium")
    (problem,) = _changes(before, after)
    assert "store 'coffee-lab''s volumes (database 2Gi -> 10Gi, content 2Gi -> 10Gi)" in problem.message
    assert "cluster 'prod' cannot grow a volume in place: its StorageClass ('gp3')" in problem.message


def test_shrinking_is_refused_whether_or_not_the_class_can_expand() -> None:
    before = _files()
    for path, old, new in (("stores/bookworm.yaml", "plan: medium", "plan: small"),
                           ("stores/nordic-knits.yaml", "plan: large", "plan: medium")):
        (problem,) = _changes(before, _replace(before, path, old, new))
        assert problem.code == errors.IMMUTABLE and "would shrink the store's volumes" in problem.message, problem


def test_an_unchanged_plan_or_a_new_store_is_no_volume_change() -> None:
    before = _files()
    assert _changes(before, before) == []
    bookworm = _text(before, "stores/bookworm.yaml")
    pages = bookworm.replace("bookworm", "pages").replace("plan: medium", "plan: large")
    after = {**before, "stores/pages.yaml": pages}
    assert _changes(before, after) == []


def test_the_cluster_schema_defaults_to_no_expansion() -> None:
    local = fleet.build(_files()).clusters["local"][0]
    prod = fleet.build(_files()).clusters["prod"][0]
    assert (local.volume_expansion, prod.volume_expansion) == (False, True)
    refused = _replace(_files(), "clusters/prod.yaml", "allowVolumeExpansion: true", "allowVolumeExpansion: yes please")
    assert any("allowVolumeExpansion" in str(p) for p in fleet.build(refused).problems)
