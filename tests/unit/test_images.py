"""Where images come from: the cluster profile's ``images`` (mirror prefix, overrides) and its
ingress controller's namespace, from the schema through the values file to ``storeops plan``."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from generator import fleet, images, models, planning, rendering, trees, validation

REPO = Path(__file__).resolve().parents[2]
PROD = (REPO / "clusters/prod.yaml").read_text()
MIRROR = "registry.internal.example/dockerhub"


def example_files() -> dict[str, bytes | str]:
    return dict(trees.read_inputs(REPO))


def with_prod(extra: str, files: dict[str, bytes | str] | None = None) -> fleet.Fleet:
    """The example fleet with ``extra`` appended to clusters/prod.yaml."""
    return fleet.build({**(files or example_files()), "clusters/prod.yaml": PROD + extra})


def problems(extra: str) -> list[str]:
    """The problems of clusters/prod.yaml with ``extra`` (an invalid profile also leaves its stores homeless)."""
    return [str(p) for p in with_prod(extra).problems if p.path == "clusters/prod.yaml"]


def rendered_values(loaded: fleet.Fleet, store_id: str) -> dict:  # type: ignore[type-arg]
    target = loaded.target(store_id)
    files = rendering.render_store(target)
    loaded_values: dict = yaml.safe_load(files[rendering.values_path(target.cluster.name, store_id)])  # type: ignore[type-arg]
    return loaded_values


def line_of(text: str) -> int:
    return (PROD + text).splitlines().index(text.splitlines()[-1]) + 1


# --- the schema and its checks --------------------------------------------------------------------


def test_a_full_images_section_is_valid() -> None:
    assert problems(f"""\
ingressControllerNamespace: traefik
images:
  registry: {MIRROR}
  overrides:
    mariadb: {{repository: storeops.local/mariadb, tag: 11.8-trixie}}
    medusa: {{repository: registry.internal.example/shop/medusa, tag: "2.10.3"}}
    redis: {{tag: 8.0_alpine}}
    wordpress: {{repository: wordpress}}
""") == []


@pytest.mark.parametrize("registry", ["localhost", "localhost:5000/mirror", "harbor.example:8443",
                                      "registry.internal.example/a/b_c", "10.0.0.5:5000"])
def test_registry_hosts_that_pass(registry: str) -> None:
    assert problems(f"images:\n  registry: {registry}\n") == []


@pytest.mark.parametrize(("extra", "field", "message"), [
    ("images:\n  overrides:\n    nginx: {tag: '1'}\n", "images.overrides.nginx",
     "unknown field (allowed: credentials, mariadb, medusa, postgres, redis, wordpress)"),
    ("images:\n  overrides:\n    mariadb: {repository: ''}\n", "images.overrides.mariadb.repository",
     "must be at least 1 characters, not 0"),
    ("images:\n  overrides:\n    mariadb: {tag: '11.8 trixie'}\n", "images.overrides.mariadb.tag",
     "'11.8 trixie' is not an image tag (letters, digits, '_', '.' and '-', not starting with '.' or '-', "
     "at most 128)"),
    ("images:\n  overrides:\n    mariadb: {tag: -rc1}\n", "images.overrides.mariadb.tag",
     "'-rc1' is not an image tag (letters, digits, '_', '.' and '-', not starting with '.' or '-', at most 128)"),
    ("images:\n  overrides:\n    mariadb: {repository: 'mariadb:11'}\n", "images.overrides.mariadb.repository",
     "'mariadb:11' is not an image repository such as mariadb or registry.example/team/mariadb "
     "(a lower-case path; no tag or digest: set tag)"),
    ("images:\n  overrides:\n    mariadb: {repository: Team/MariaDB}\n", "images.overrides.mariadb.repository",
     "'Team/MariaDB' is not an image repository such as mariadb or registry.example/team/mariadb "
     "(a lower-case path; no tag or digest: set tag)"),
    ("images:\n  overrides:\n    mariadb: {}\n", "images.overrides.mariadb",
     "must set at least one of: repository, tag"),
    ("images:\n  overrides:\n    mariadb: {image: mariadb}\n", "images.overrides.mariadb.image",
     "unknown field (allowed: repository, tag)"),
    ("images:\n  mirror: x.example\n", "images.mirror", "unknown field (allowed: overrides, registry)"),
    ("ingressControllerNamespace: Traefik\n", "ingressControllerNamespace",
     "'Traefik' is not a namespace name (lower-case letters, digits and '-')"),
])
def test_bad_images_settings_are_named(extra: str, field: str, message: str) -> None:
    assert problems(extra) == [f"clusters/prod.yaml:{line_of(extra)}: {field}: {message}"]


@pytest.mark.parametrize("registry", ["mirror", "https://registry.example/mirror", "registry.example/mirror/",
                                      "registry.example/Mirror", ""])
def test_a_registry_is_a_host_and_a_path(registry: str) -> None:
    extra = f"images:\n  registry: '{registry}'\n"
    (problem,) = problems(extra)
    assert problem.startswith(f"clusters/prod.yaml:{line_of(extra)}: images.registry: '{registry}' is not a "
                              "registry host with an optional path, such as registry.internal.example/mirror")


def test_override_keys_are_the_charts_images() -> None:
    """The schema's image keys and their engines are exactly the components with an image in each chart."""
    from_charts: dict[str, set[str]] = {}
    for engine in validation.engines():
        values = yaml.safe_load((REPO / rendering.chart_values_path(engine)).read_text())
        for component in images.chart_images(values):
            from_charts.setdefault(component, set()).add(engine)
    assert {k: set(v) for k, v in validation.image_keys().items()} == from_charts
    assert validation.engine_images("woocommerce") == ("credentials", "mariadb", "wordpress")
    assert validation.engine_images("medusa") == ("credentials", "medusa", "postgres", "redis")


def test_a_mirror_needs_the_charts_default_images() -> None:
    files = example_files()
    del files["templates/medusa/values.yaml"]
    loaded = with_prod(f"images:\n  registry: {MIRROR}\n", files)
    line = line_of(f"images:\n  registry: {MIRROR}\n")
    assert [str(p) for p in loaded.problems] == [
        f"clusters/prod.yaml:{line}: images.registry: the mirror needs the medusa chart's default images "
        "(credentials, medusa, postgres, redis), but templates/medusa/values.yaml is not there"]
    # Overrides with a repository do not need the chart: the local profile renders without the charts.
    assert with_prod("images:\n  overrides:\n    postgres: {repository: pg.example/pg}\n", files).problems == []


# --- the mirror rule ------------------------------------------------------------------------------


@pytest.mark.parametrize(("repository", "expected"), [
    ("mariadb", f"{MIRROR}/library/mariadb"),
    ("bitnami/redis", f"{MIRROR}/bitnami/redis"),
    ("docker.io/library/postgres", f"{MIRROR}/library/postgres"),
    ("docker.io/python", f"{MIRROR}/library/python"),
    ("index.docker.io/bitnami/redis", f"{MIRROR}/bitnami/redis"),
    ("ghcr.io/storeops/medusa-store", "ghcr.io/storeops/medusa-store"),
    ("storeops.local/mariadb", "storeops.local/mariadb"),
    ("localhost/mariadb", "localhost/mariadb"),
    ("registry:5000/mariadb", "registry:5000/mariadb"),
])
def test_only_docker_hub_images_go_through_the_mirror(repository: str, expected: str) -> None:
    assert images.mirrored(repository, MIRROR) == expected


# --- rendering ------------------------------------------------------------------------------------


def test_production_profiles_render_no_images_and_no_controller_namespace() -> None:
    loaded = fleet.build(example_files())
    for store_id in ("nordic-knits", "coffee-lab"):
        values = rendered_values(loaded, store_id)
        assert not {"networkPolicy", *validation.image_keys()} & set(values), store_id


def test_a_mirror_prefixes_every_docker_hub_image_of_both_engines() -> None:
    loaded = with_prod(f"images:\n  registry: {MIRROR}\n")
    woo = rendered_values(loaded, "nordic-knits")
    assert {k: woo[k] for k in validation.engine_images("woocommerce")} == {
        "credentials": {"image": {"repository": f"{MIRROR}/library/python"}},
        "mariadb": {"image": {"repository": f"{MIRROR}/library/mariadb"}},
        "wordpress": {"image": {"repository": f"{MIRROR}/library/wordpress"}},
    }
    medusa = rendered_values(loaded, "coffee-lab")
    assert {k: medusa[k] for k in ("credentials", "postgres", "redis")} == {
        "credentials": {"image": {"repository": f"{MIRROR}/library/python"}},
        "postgres": {"image": {"repository": f"{MIRROR}/library/postgres"}},
        "redis": {"image": {"repository": f"{MIRROR}/library/redis"}},
    }
    # ghcr.io is not Docker Hub: the Medusa image is the chart's until an override says otherwise.
    assert "medusa" not in medusa
    # Tags stay the chart's.
    assert all("tag" not in woo[k]["image"] for k in validation.engine_images("woocommerce"))


def test_overrides_apply_to_the_engines_that_have_the_image() -> None:
    loaded = with_prod("""\
images:
  overrides:
    mariadb: {tag: 11.8.3}
    postgres: {repository: pg.internal.example/postgres, tag: 17-custom}
    medusa: {repository: registry.internal.example/shops/medusa, tag: "2024.1"}
""")
    woo = rendered_values(loaded, "nordic-knits")
    assert woo["mariadb"] == {"image": {"tag": "11.8.3"}}
    assert not {"postgres", "medusa", "redis", "credentials", "wordpress"} & set(woo)
    medusa = rendered_values(loaded, "coffee-lab")
    assert medusa["postgres"] == {"image": {"repository": "pg.internal.example/postgres", "tag": "17-custom"}}
    # A number-like tag is written as a string (Helm would read 2024.1 as a float).
    assert medusa["medusa"] == {"image": {"repository": "registry.internal.example/shops/medusa", "tag": "2024.1"}}
    assert "mariadb" not in medusa


def test_an_override_repository_without_a_host_goes_through_the_mirror_too() -> None:
    loaded = with_prod(f"""\
images:
  registry: {MIRROR}
  overrides:
    mariadb: {{repository: bitnami/mariadb, tag: "11.8"}}
    wordpress: {{repository: registry.internal.example/shops/wordpress}}
""")
    effective = loaded.effective_images(loaded.target("nordic-knits").store)
    assert effective["mariadb"] == images.Image(f"{MIRROR}/bitnami/mariadb", "11.8")
    assert effective["wordpress"].repository == "registry.internal.example/shops/wordpress"
    assert effective["credentials"].repository == f"{MIRROR}/library/python"
    chart = loaded.charts["woocommerce"]
    assert effective["wordpress"].tag == chart["wordpress"].tag


def test_the_local_profile_runs_the_local_builds_behind_traefik() -> None:
    loaded = fleet.build(example_files())
    local = loaded.clusters["local"][0]
    assert (local.ingress_class, local.ingress_controller_namespace) == ("traefik", "traefik")
    woo = loaded.effective_images(loaded.target("acme-outdoor").store)
    medusa = loaded.effective_images(loaded.target("bookworm").store)
    assert {c: str(i) for c, i in woo.items()} == {
        "credentials": "storeops.local/python:3.13-trixie",
        "mariadb": "storeops.local/mariadb:11.8-trixie",
        "wordpress": "storeops.local/wordpress:6.8-apache-trixie",
    }
    assert {c: str(i) for c, i in medusa.items()} == {
        "credentials": "storeops.local/python:3.13-trixie",
        "medusa": "storeops.local/medusa-store:2.21.2-trixie",
        "postgres": "storeops.local/postgres:17-trixie",
        "redis": "storeops.local/redis:8.0-trixie",
    }
    values = rendered_values(loaded, "acme-outdoor")
    assert values["networkPolicy"] == {"ingressControllerNamespace": "traefik"}
    assert values["ingress"]["className"] == "traefik"
    assert values["wordpress"] == {"image": {"repository": "storeops.local/wordpress", "tag": "6.8-apache-trixie"}}
    # The setup Job runs the wordpress image; its plugin source is the profile's (a local address).
    assert values["setup"] == {"pluginSource": "http://127.0.0.1:9/woocommerce.{version}.zip"}


def test_a_target_without_the_charts_still_renders_the_overrides() -> None:
    """Callers that build a Target by hand (no chart images) get the same values for the local profile."""
    loaded = fleet.build(example_files())
    target = loaded.target("acme-outdoor")
    bare = rendering.Target(target.store, target.cluster, target.plan)
    assert rendering.render_store(bare) == rendering.render_store(target)


def test_the_profile_wins_over_the_chart_and_store_entries_have_no_image_settings() -> None:
    store_fields = validation.load_schema("store.schema.json")["properties"]
    assert not {"image", "images", *validation.image_keys()} & set(store_fields)
    profile = models.Images(overrides=(("mariadb", models.ImageOverride(tag="10.11")),))
    chart = {"mariadb": images.Image("mariadb", "11.4.8")}
    assert images.effective("woocommerce", profile, chart)["mariadb"] == images.Image("mariadb", "10.11")
    assert images.effective("woocommerce", None, chart)["mariadb"] == images.Image("mariadb", "11.4.8")


# --- the plan -------------------------------------------------------------------------------------


def test_plan_lists_the_images_of_stores_whose_profile_sets_them() -> None:
    loaded = fleet.build(example_files())
    shown = {s.store_id: s for s in planning.store_images(loaded, ["acme-outdoor", "nordic-knits"])}
    assert list(shown) == ["acme-outdoor"]  # nordic-knits' profile has no images: the charts' own
    acme = shown["acme-outdoor"]
    assert acme.source == "clusters/local.yaml"
    assert [(c, str(i), mine) for c, i, mine in acme.images] == [
        ("credentials", "storeops.local/python:3.13-trixie", True),
        ("mariadb", "storeops.local/mariadb:11.8-trixie", True),
        ("wordpress", "storeops.local/wordpress:6.8-apache-trixie", True),
    ]
    assert acme.as_dict()["fromProfile"] == ["credentials", "mariadb", "wordpress"]


def test_a_change_to_a_profiles_images_names_every_store_of_its_cluster() -> None:
    before = fleet.build(example_files())
    after = with_prod("images:\n  overrides:\n    redis: {tag: 8.0-alpine}\n")
    assert planning.image_changes(before, after) == {"prod": ["coffee-lab", "nordic-knits"]}
    assert planning.image_changes(before, before) == {}
    # A change elsewhere in the profile is not an image change.
    assert planning.image_changes(before, with_prod("description: changed\n")) == {}
