"""Every validation rule, each with an input that breaks it and the exact problem it reports."""

from __future__ import annotations

import re
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from generator import errors, fleet, models, trees, validation
from generator.errors import InvalidInput, MassDeleteRefused

REPO = Path(__file__).resolve().parents[2]

GOOD = """\
id: {id}
name: Shop {id}
engine: woocommerce
plan: small
cluster: local
owner:
  name: Pat
  email: pat@example.com
"""


def example_files() -> dict[str, bytes]:
    return trees.read_inputs(REPO)


def problems_for(files: dict[str, bytes | str]) -> list[str]:
    return [str(p) for p in fleet.build(files).problems]


def with_store(text: str, path: str = "stores/shop.yaml", **extra: str) -> list[str]:
    files: dict[str, bytes | str] = {**example_files(), path: text, **extra}
    return problems_for(files)


def test_examples_are_valid() -> None:
    assert problems_for(dict(example_files())) == []


def test_valid_new_store() -> None:
    assert with_store(GOOD.format(id="shop")) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD.format(id="shop") + "colour: red\n",
         "stores/shop.yaml:9: colour: unknown field (allowed: adminPasswordRotation, callbackUrl, chartVersion, "
         "cluster, domain, engine, id, name, owner, plan, restoreFrom, state)"),
        (GOOD.format(id="shop").replace("  email: pat@example.com\n", "  email: pat@example.com\n  age: 3\n"),
         "stores/shop.yaml:9: owner.age: unknown field (allowed: email, github, name)"),
        (GOOD.format(id="shop").replace("plan: small", "plan: huge"),
         "stores/shop.yaml:4: plan: 'huge' is not one of small, medium, large"),
        (GOOD.format(id="shop").replace("name: Shop shop", "name: 42"),
         "stores/shop.yaml:2: name: must be a string, not integer 42"),
        (GOOD.format(id="shop").replace("engine: woocommerce\n", ""),
         "stores/shop.yaml:1: engine: is required"),
        (GOOD.format(id="shop").replace("pat@example.com", "not-an-email"),
         "stores/shop.yaml:8: owner.email: 'not-an-email' is not an email address"),
        (GOOD.format(id="shop") + "state: paused\n",
         "stores/shop.yaml:9: state: 'paused' is not one of active, suspended"),
        (GOOD.format(id="shop") + "domain: Shop.Example.COM\n",
         "stores/shop.yaml:9: domain: 'Shop.Example.COM' is not a lower-case DNS name such as shop.example.com"),
        ("- a\n- b\n", "stores/shop.yaml:1: must be a mapping of fields, not list"),
        (GOOD.format(id="shop").replace("owner:\n  name: Pat\n  email: pat@example.com\n", "owner: pat\n"),
         "stores/shop.yaml:6: owner: must be a mapping, not string 'pat'"),
    ],
)
def test_schema_problems_name_file_line_and_field(text: str, expected: str) -> None:
    assert expected in with_store(text)


@pytest.mark.parametrize("bad_id", ["../x", "A_B", "ünï", "-shop", "shop-", "1shop", "a.b"])
def test_ids_must_be_dns_labels(bad_id: str) -> None:
    found = with_store(GOOD.format(id=f'"{bad_id}"'))
    assert any(f"id: {bad_id!r}: lower-case letters, digits and '-' only" in p for p in found), found


def test_long_id_names_the_kubernetes_limit() -> None:
    long_id = "a" * 200
    found = with_store(GOOD.format(id=long_id).replace(f"Shop {long_id}", "Long"), path=f"stores/{long_id}.yaml")
    assert found == [f"stores/{long_id}.yaml:1: id: is 200 characters; the Helm release name store-{{id}} "
                     "must fit 53, so an id may have at most 47"]
    longest = "a" * 47
    assert with_store(GOOD.format(id=longest), path=f"stores/{longest}.yaml") == []
    just_over = "a" * 48
    assert with_store(GOOD.format(id=just_over), path=f"stores/{just_over}.yaml") == [
        f"stores/{just_over}.yaml:1: id: is 48 characters; the Helm release name store-{{id}} must fit 53, "
        "so an id may have at most 47"
    ]


def test_file_name_must_equal_id() -> None:
    assert with_store(GOOD.format(id="other")) == [
        "stores/shop.yaml:1: id: 'other' does not match the file name; the file must be stores/other.yaml"
    ]


def test_yml_suffix_is_an_error_not_ignored() -> None:
    found = with_store(GOOD.format(id="shop"), path="stores/shop.yml")
    assert found == ["stores/shop.yml: store entries end in .yaml; rename to stores/shop.yaml"]


def test_duplicate_ids_are_reported() -> None:
    # The second file's name mismatch is one problem; the duplicate id is another.
    found = with_store(GOOD.format(id="bookworm"), path="stores/zz-copy.yaml")
    assert "stores/zz-copy.yaml:1: id: 'bookworm' does not match the file name; " \
           "the file must be stores/bookworm.yaml" in found


def test_duplicate_custom_domains() -> None:
    text = GOOD.format(id="shop").replace("cluster: local", "cluster: prod") + "domain: shop.nordicknits.example\n"
    assert with_store(text) == [
        "stores/shop.yaml:9: domain: host 'shop.nordicknits.example' is already served by stores/nordic-knits.yaml"
    ]


def test_custom_domain_may_not_take_another_stores_derived_host() -> None:
    text = GOOD.format(id="shop") + "domain: bookworm.stores.localtest.me\n"
    assert with_store(text) == [
        "stores/shop.yaml:9: domain: host 'bookworm.stores.localtest.me' is already served by stores/bookworm.yaml"
    ]


def test_unknown_cluster() -> None:
    text = GOOD.format(id="shop").replace("cluster: local", "cluster: mars")
    assert with_store(text) == ["stores/shop.yaml:5: cluster: 'mars' has no profile in clusters/ (known: local, prod)"]


def test_cluster_capacity_in_stores_cpu_and_memory() -> None:
    files: dict[str, bytes | str] = dict(example_files())
    local = files["clusters/local.yaml"].decode()  # type: ignore[union-attr]
    files["clusters/local.yaml"] = (local.replace("stores: 20", "stores: 3").replace('cpu: "40"', 'cpu: "3"')
                                    .replace("memory: 80Gi", "memory: 6Gi"))
    for i in range(3):
        files[f"stores/s{i}.yaml"] = GOOD.format(id=f"s{i}")
    line = local.splitlines().index("  stores: 20") + 1
    # bookworm (medium: 2 CPU, 4Gi) + acme-outdoor + 3 new small stores (1 CPU, 2Gi each) = 5 stores.
    assert problems_for(files) == [
        f"clusters/local.yaml:{line}: capacity.stores: 5 stores are placed on cluster 'local'; its capacity is 3",
        f"clusters/local.yaml:{line + 1}: capacity.cpu: the plans of 5 stores need 6000m CPU; capacity is 3000m",
        f"clusters/local.yaml:{line + 2}: capacity.memory: the plans of 5 stores need 12.0Gi memory; "
        "capacity is 6.0Gi",
    ]


def test_cluster_profile_rules() -> None:
    files: dict[str, bytes | str] = dict(example_files())
    files["clusters/edge.yaml"] = "name: edge2\ndestination: {}\nargocd: {namespace: argocd}\n"
    found = problems_for(files)
    assert "clusters/edge.yaml:1: name: 'edge2' does not match the file name; the file must be clusters/edge2.yaml" \
        in found
    assert "clusters/edge.yaml:2: destination: must set exactly one of: name, server" in found
    assert "clusters/edge.yaml:3: argocd.repoURL: is required" in found
    assert "clusters/edge.yaml:1: baseDomain: is required" in found


def test_plan_offered_by_schema_must_be_defined() -> None:
    files: dict[str, bytes | str] = dict(example_files())
    plans = files["templates/plans.yaml"].decode()  # type: ignore[union-attr]
    files["templates/plans.yaml"] = plans[: plans.index("  large:")]
    found = problems_for(files)
    assert "templates/plans.yaml:7: plans.large: is offered by the store schema but not defined" in found


def test_all_problems_are_reported_at_once() -> None:
    files: dict[str, bytes | str] = dict(example_files())
    files["stores/one.yaml"] = GOOD.format(id="one").replace("plan: small", "plan: huge")
    files["stores/two.yaml"] = "id: two\nbogus: [\n"
    files["stores/three.yaml"] = GOOD.format(id="three").replace("cluster: local", "cluster: mars") + "x: 1\n"
    found = problems_for(files)
    assert len(found) == 4, found
    assert [p.split(":")[0] for p in found] == ["stores/one.yaml", "stores/three.yaml", "stores/three.yaml",
                                                "stores/two.yaml"]


def test_targets_refuse_an_invalid_fleet() -> None:
    files: dict[str, bytes | str] = {**example_files(), "stores/x.yaml": "id: x\n"}
    with pytest.raises(InvalidInput) as caught:
        fleet.build(files).targets()
    assert "stores/x.yaml:1: engine: is required" in str(caught.value)


def test_incremental_update_equals_full_build() -> None:
    files: dict[str, bytes | str] = dict(example_files())
    base = fleet.build(files)
    changed = GOOD.format(id="bookworm").replace("woocommerce", "medusa")
    files["stores/bookworm.yaml"] = changed
    assert base.with_store("stores/bookworm.yaml", changed).targets() == fleet.build(files).targets()
    # Cross-entry rules run again: a duplicate host introduced by one file is caught.
    clash = GOOD.format(id="shop") + "domain: acme-outdoor.stores.localtest.me\n"
    assert base.with_store("stores/shop.yaml", clash).problems[0].message.startswith("host 'acme-outdoor")
    assert "stores/bookworm.yaml" not in base.with_store("stores/bookworm.yaml", None).stores


def test_mass_delete_guard() -> None:
    existing = {f"s{i}" for i in range(8)}
    fleet.check_removals(existing, existing - {"s1", "s2"}, share=0.25, allow=False)
    with pytest.raises(MassDeleteRefused, match="refusing to remove 3 of 8 stores at once"):
        fleet.check_removals(existing, existing - {"s1", "s2", "s3"}, share=0.25, allow=False)
    with pytest.raises(MassDeleteRefused, match="no store entries are left; refusing to remove all 1 stores"):
        fleet.check_removals({"s0"}, set(), share=0.25, allow=False)
    fleet.check_removals(existing, set(), share=0.25, allow=True)
    # One store may always go.
    fleet.check_removals({"a", "b"}, {"a"}, share=0.0, allow=False)


# The fast schema check decides whether jsonschema runs at all, so the two must never disagree.
_store_like = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.from_regex(r"[a-z][-a-z0-9]{0,10}", fullmatch=True), st.text(max_size=8), st.integers()),
        "name": st.one_of(st.text(max_size=120), st.none()),
        "engine": st.sampled_from(["woocommerce", "medusa", "shopify", ""]),
        "plan": st.sampled_from(["small", "medium", "large", "huge"]),
        "cluster": st.one_of(st.sampled_from(["local", "prod", "A"]), st.integers()),
        "owner": st.one_of(st.fixed_dictionaries(
            {"name": st.text(max_size=5), "email": st.sampled_from(["a@b.co", "nope", ""])},
            optional={"github": st.sampled_from(["ok-user", "-bad", "a" * 40]), "x": st.integers()}), st.text()),
        "domain": st.sampled_from(["shop.example.com", "Shop.Example.com", "x", "a..b"]),
        "state": st.sampled_from(["active", "suspended", "paused"]),
        "extra": st.integers(),
    },
)


@settings(max_examples=500, deadline=None)
@given(_store_like)
def test_fast_schema_check_agrees_with_jsonschema(data: dict[str, object]) -> None:
    reference = jsonschema.Draft202012Validator(validation.load_schema("store.schema.json")).is_valid(data)
    assert validation.is_valid(data, "store.schema.json") is reference


@pytest.mark.parametrize(("files", "code"), [
    ({"stores/shop.yaml": "id: [shop"}, errors.PARSE),
    ({"stores/shop.yaml": GOOD.format(id="shop").replace("plan: small", "plan: huge")}, errors.SCHEMA),
    ({"stores/shop.yaml": GOOD.format(id="other")}, errors.FILE_NAME),
    ({"stores/" + "a" * 48 + ".yaml": GOOD.format(id="a" * 48)}, errors.NAME_LENGTH),
    ({"stores/shop.yaml": GOOD.format(id="shop").replace("cluster: local", "cluster: mars")},
     errors.UNKNOWN_CLUSTER),
    ({"stores/shop.yaml": GOOD.format(id="shop") + "domain: bookworm.stores.localtest.me\n"}, errors.HOST_TAKEN),
])
def test_each_problem_names_its_kind(files: dict[str, str], code: str) -> None:
    assert [p.code for p in fleet.build({**example_files(), **files}).problems] == [code]


def test_an_over_full_cluster_is_a_capacity_problem() -> None:
    crowded: dict[str, bytes | str] = {**example_files(),
                                       **{f"stores/s{i}.yaml": GOOD.format(id=f"s{i}") for i in range(30)}}
    assert {p.code for p in fleet.build(crowded).problems} == {errors.CAPACITY}


@pytest.mark.parametrize(("value", "ok"), [
    ("shop", True), ("a" * 47, True), ("a-1", True), ("a" * 48, False), ("1shop", False), ("shop-", False),
    ("Shop", False), ("shop\n", False), ("", False), (None, False), ("sh op", False)])
def test_one_store_id_rule(value: object, ok: bool) -> None:
    assert validation.is_store_id(value) is ok


def test_the_engine_list_is_the_schema_and_each_engine_has_its_chart() -> None:
    assert validation.engines()
    for engine in validation.engines():
        assert (REPO / "templates" / engine / "Chart.yaml").is_file(), engine
    readme = (REPO / "README.md").read_text()
    assert f"engine: woocommerce         # {' | '.join(validation.engines())}" in readme


def _patterns(value: object) -> list[str]:
    if isinstance(value, dict):
        return [v for k, v in value.items() if k == "pattern" and isinstance(v, str)] + \
            [p for v in value.values() for p in _patterns(v)]
    if isinstance(value, list):
        return [p for v in value for p in _patterns(v)]
    return []


@pytest.mark.parametrize("schema", ["store.schema.json", "cluster.schema.json", "plans.schema.json"])
def test_every_schema_pattern_is_matched_against_the_whole_string(schema: str) -> None:
    patterns = _patterns(validation.load_schema(schema))
    assert patterns
    for pattern in patterns:
        anchored = validation.whole_string(pattern)
        assert re.search(r"(?<!\\)\$", anchored) is None, pattern


@pytest.mark.parametrize(("field", "value"), [
    ("id", "shop\n"), ("domain", "shop.example.com\n"), ("owner", {"name": "Pat", "email": "pat@example.com\n"}),
    ("owner", {"name": "Pat", "email": "pat@example.com", "github": "pat\n"}), ("cluster", "local\n")])
def test_a_trailing_newline_is_refused_in_every_pattern_field(field: str, value: object) -> None:
    data = {"id": "shop", "name": "Shop", "engine": "woocommerce", "plan": "small", "cluster": "local",
            "owner": {"name": "Pat", "email": "pat@example.com"}, field: value}
    assert not validation.is_valid(data, "store.schema.json")
    assert list(validation._validator("store.schema.json").iter_errors(data))
    valid = {**data, field: value.replace("\n", "") if isinstance(value, str)
             else {k: v.replace("\n", "") for k, v in value.items()}}  # type: ignore[union-attr]
    assert validation.is_valid(valid, "store.schema.json")


def test_quantities_are_read_whole() -> None:
    assert models.cpu_millis("500m") == 500 and models.memory_bytes("1Gi") == 2**30
    for bad in ("500m\n", "1Gi\n"):
        with pytest.raises(ValueError):
            models.cpu_millis(bad) if bad.startswith("5") else models.memory_bytes(bad)


def test_a_missing_field_is_reported_once() -> None:
    found = with_store("name: X\n", path="stores/x.yaml")
    assert sorted(found) == sorted(set(found))
    assert found.count("stores/x.yaml:1: engine: is required") == 1


def test_a_per_owner_limit_counts_stores_by_owner_email_on_the_cluster() -> None:
    local = example_files()["clusters/local.yaml"].decode().replace("  stores: 20\n",
                                                                      "  stores: 20\n  storesPerOwner: 2\n")
    owner = GOOD.replace("pat@example.com", "Jane@Example.com")
    files: dict[str, bytes | str] = {**example_files(), "clusters/local.yaml": local,
                                     **{f"stores/own-{i}.yaml": owner.format(id=f"own-{i}") for i in range(3)}}
    problems = fleet.build(files).problems
    assert [(p.path, p.code) for p in problems] == [("stores/own-2.yaml", errors.OWNER_LIMIT)]
    assert str(problems[0]) == ("stores/own-2.yaml:8: owner.email: Jane@Example.com would have 3 stores on "
                                "cluster 'local'; each owner may have 2 there")
    files["stores/own-2.yaml"] = owner.format(id="own-2").replace("Jane@Example.com", "other@example.com")
    assert fleet.build(files).problems == []
