"""The cluster profile's ``woocommerce.pluginSource``: where the setup Job downloads the WooCommerce
plugin, from the schema to the values file."""

from __future__ import annotations

import pytest

from generator import fleet, models
from tests.unit.test_images import example_files, problems, rendered_values, with_prod

MIRROR_SOURCE = "https://mirror.internal.example/wordpress-plugins/woocommerce.{version}.zip"


@pytest.mark.parametrize("source", [
    MIRROR_SOURCE,
    "http://10.0.0.5:8080/woocommerce-{version}.zip",
    "https://artifacts.example/generic/woo/{version}/woocommerce.zip?download=1",
])
def test_plugin_sources_that_pass(source: str) -> None:
    assert problems(f'woocommerce:\n  pluginSource: "{source}"\n') == []


@pytest.mark.parametrize(("extra", "message"), [
    ('woocommerce:\n  pluginSource: "https://mirror.example/woocommerce.zip"\n', "not an http(s) URL with {version}"),
    ('woocommerce:\n  pluginSource: "ftp://mirror.example/woocommerce.{version}.zip"\n', "not an http(s) URL"),
    ('woocommerce:\n  pluginSource: "https://mirror example/{version}.zip"\n', "not an http(s) URL"),
    ("woocommerce:\n  pluginSource: 3\n", "must be"),
    ("woocommerce: {}\n", "must set at least one of: pluginSource"),
    ('woocommerce:\n  pluginSorce: "https://mirror.example/{version}.zip"\n', "unknown field (allowed: pluginSource)"),
], ids=["no-version", "not-http", "space", "not-a-string", "empty", "typo"])
def test_plugin_sources_that_are_refused(extra: str, message: str) -> None:
    found = problems(extra)
    assert len(found) == 1 and "woocommerce" in found[0] and message in found[0], found


def test_the_profiles_plugin_source_reaches_woocommerce_stores_only() -> None:
    loaded = with_prod(f'woocommerce:\n  pluginSource: "{MIRROR_SOURCE}"\n')
    assert loaded.clusters["prod"][0].woocommerce == models.WooCommerce(plugin_source=MIRROR_SOURCE)
    assert rendered_values(loaded, "nordic-knits")["setup"] == {"pluginSource": MIRROR_SOURCE}
    assert "setup" not in rendered_values(loaded, "coffee-lab")


def test_without_the_setting_the_charts_default_applies_and_the_values_stay_as_they_were() -> None:
    loaded = fleet.build(example_files())
    assert loaded.clusters["prod"][0].woocommerce is None
    assert "setup" not in rendered_values(loaded, "nordic-knits")


def test_the_local_profile_points_at_an_address_that_serves_nothing() -> None:
    local = fleet.build(example_files()).clusters["local"][0]
    assert local.woocommerce is not None
    assert local.woocommerce.plugin_source == "http://127.0.0.1:9/woocommerce.{version}.zip"
