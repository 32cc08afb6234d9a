"""The shared library chart templates/storeops-lib and how the engine charts load it.

One copy of the shared helpers and of the credentials script, in a Helm library chart. Each engine
chart names it as a file:// dependency and holds it as charts/storeops-lib, a relative symlink to
../../storeops-lib committed as such, so `helm template` and Argo CD's repo-server render a checkout
as it is: no `helm dependency build`, no Chart.lock, no repository, no network.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from generator import constants, rendering
from tests.integration import test_charts as charts

REPO = charts.REPO
TEMPLATES = REPO / constants.TEMPLATES_DIR
LIBRARY = "storeops-lib"
LIBRARY_DIR = TEMPLATES / LIBRARY
ENGINES = charts.ENGINES
DEFINE = re.compile(r'{{-?\s*define\s+"([^"]+)"')


@pytest.fixture(scope="session")
def helm() -> pathlib.Path:
    return charts.helm_binary()


def _chart(folder: pathlib.Path) -> dict[str, Any]:
    decoded = yaml.safe_load((folder / "Chart.yaml").read_text())
    assert isinstance(decoded, dict)
    return decoded


def _engines_of_the_store_schema() -> set[str]:
    schema = json.loads((REPO / "generator" / "schemas" / "store.schema.json").read_text())
    return set(schema["properties"]["engine"]["enum"])


def _own_files(chart: pathlib.Path) -> list[pathlib.Path]:
    """The files of a chart folder, without its dependencies under charts/."""
    return sorted(p for p in chart.rglob("*") if p.is_file() and "charts" not in p.relative_to(chart).parts)


def _defines(files: list[pathlib.Path]) -> set[str]:
    return {name for f in files if f.suffix in (".tpl", ".yaml", ".txt") for name in DEFINE.findall(f.read_text())}


# --- one library chart, and it is no engine ---------------------------------------------------------


def test_the_library_is_the_only_library_chart_and_no_engine() -> None:
    types = {p.parent.name: _chart(p.parent).get("type", "application") for p in TEMPLATES.glob("*/Chart.yaml")}
    assert {name for name, kind in types.items() if kind == "library"} == {LIBRARY}
    # Every other chart folder is an engine a store can name, and every engine has its chart.
    engines = _engines_of_the_store_schema()
    assert LIBRARY not in engines
    assert {name for name, kind in types.items() if kind == "application"} == engines == set(ENGINES)
    for engine in engines:
        assert (REPO / rendering.chart_path(engine)).resolve() == TEMPLATES / engine


def test_the_library_holds_only_what_a_library_chart_uses() -> None:
    """Helm renders only the _-prefixed templates of a library chart; anything else would be dropped silently."""
    assert _chart(LIBRARY_DIR)["apiVersion"] == "v2"
    assert not (LIBRARY_DIR / "charts").exists() and not _chart(LIBRARY_DIR).get("dependencies")
    templates = [p.name for p in (LIBRARY_DIR / "templates").iterdir()]
    assert templates and all(name.startswith("_") for name in templates), templates
    assert (LIBRARY_DIR / "files" / "credentials.py").is_file()


# --- each engine chart depends on it, and finds it in the checkout ----------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_each_engine_chart_depends_on_the_library_through_a_file_url(engine: str) -> None:
    (dependency,) = _chart(TEMPLATES / engine).get("dependencies") or [None]
    # No alias: the credentials script is read through .Subcharts under the library's own name.
    assert dependency == {"name": LIBRARY, "version": _chart(LIBRARY_DIR)["version"],
                          "repository": f"file://../{LIBRARY}"}  # fmt: skip


@pytest.mark.parametrize("engine", ENGINES)
def test_the_dependency_is_a_relative_symlink_to_the_library_committed_as_one(engine: str) -> None:
    link = TEMPLATES / engine / "charts" / LIBRARY
    assert link.is_symlink()
    # Relative and inside the repository: Argo CD refuses a symlink that leaves it.
    assert os.readlink(link) == f"../../{LIBRARY}"
    assert link.resolve() == LIBRARY_DIR
    assert sorted(p.name for p in (TEMPLATES / engine / "charts").iterdir()) == [LIBRARY]
    staged = subprocess.run(["git", "-C", str(REPO), "ls-files", "--stage", "--", str(link.relative_to(REPO))],
                            capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    assert staged[:1] == ["120000"], f"git does not hold {link.relative_to(REPO)} as a symlink: {staged}"
    assert not (TEMPLATES / engine / "Chart.lock").exists()


@pytest.mark.parametrize("engine", ENGINES)
def test_no_copy_of_the_library_lives_in_an_engine_chart(engine: str) -> None:
    chart = TEMPLATES / engine
    own = _own_files(chart)
    library = _own_files(LIBRARY_DIR)
    library_bytes = {p.read_bytes() for p in library}
    assert not [p for p in own if p.read_bytes() in library_bytes]
    assert not [p for p in own if p.name in ("_storeops.tpl", "credentials.py")]
    # Helpers are defined once: an engine chart neither copies nor overrides a library define.
    mine = _defines(own)
    assert not {name for name in mine if name.startswith("storeops.")}
    assert not mine & _defines(library)
    # The script comes from the library's scope ("storeops.credentialsScript"), not from the engine's files.
    assert not [p for p in own if re.search(r"\.Files\.Get\s+\"files/credentials\.py\"", p.read_text())]


def _offline_env(tmp_path: pathlib.Path) -> dict[str, str]:
    """Empty Helm homes (no repositories, no cache) and a proxy that refuses every connection."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    for name in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        (tmp_path / name).mkdir()
        env[name] = str(tmp_path / name)
    env.update(HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9", NO_PROXY="")
    return env


def _tree(root: pathlib.Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("engine", ENGINES)
def test_a_checkout_renders_offline_without_building_the_dependency(
    helm: pathlib.Path, engine: str, tmp_path: pathlib.Path
) -> None:
    """What Argo CD's repo-server does with a checkout: helm template in the chart folder, nothing else."""
    checkout = tmp_path / "checkout"
    shutil.copytree(TEMPLATES, checkout / constants.TEMPLATES_DIR, symlinks=True)
    assert (checkout / constants.TEMPLATES_DIR / engine / "charts" / LIBRARY).is_symlink()
    before = _tree(checkout)
    case = next(c for c in charts.ACTIVE if c.engine == engine)
    values = charts._values_file(tmp_path, case.values_text())
    env = _offline_env(tmp_path)
    listed = subprocess.run([str(helm), "dependency", "list", str(checkout / constants.TEMPLATES_DIR / engine)],
                            capture_output=True, text=True, env=env, timeout=60, check=True).stdout  # fmt: skip
    assert re.search(rf"^{LIBRARY}\s+\S+\s+file://\.\./{LIBRARY}\s+unpacked\s*$", listed, re.M), listed
    offline = subprocess.run(
        [str(helm), "template", case.store.app_name, str(checkout / constants.TEMPLATES_DIR / engine),
         "--namespace", case.namespace, "--values", str(values), "--kube-version", charts._kube_version()],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert offline.returncode == 0, offline.stderr
    assert offline.stdout == charts._template_text(helm, case, values)
    # Nothing fetched, built or locked: no Chart.lock, no charts/*.tgz, empty Helm homes.
    assert _tree(checkout) == before
    for name in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        assert _tree(tmp_path / name) == []


# --- what the engine charts get from it -------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_the_credentials_hook_ships_the_library_script_as_it_is(
    helm: pathlib.Path, engine: str, tmp_path: pathlib.Path
) -> None:
    case = next(c for c in charts.ACTIVE if c.engine == engine)
    manifests = charts._documents(charts._template_text(helm, case, charts._values_file(tmp_path, case.values_text())))
    config = charts._one(manifests, "ConfigMap", "credentials-writer")
    assert config["data"] == {"credentials.py": (LIBRARY_DIR / "files" / "credentials.py").read_text()}
    # The library's helpers run in the engine chart's scope: its name and version label everything.
    chart = _chart(TEMPLATES / engine)
    for m in manifests:
        labels = m["metadata"]["labels"]
        assert labels["helm.sh/chart"] == f"{engine}-{chart['version']}"
        assert labels["app.kubernetes.io/name"] == engine


@pytest.mark.parametrize("engine", ENGINES)
def test_the_library_takes_no_values(helm: pathlib.Path, engine: str, tmp_path: pathlib.Path) -> None:
    """Helm gives every dependency a values key; the engine schema admits it empty and nothing more."""
    case = next(c for c in charts.ACTIVE if c.engine == engine)
    values = charts._values_file(tmp_path, case.values_text())
    override = charts._values_file(tmp_path, yaml.safe_dump({LIBRARY: {"labels": {"x": "y"}}}))
    result = charts._helm(helm, "template", "store-x", str(TEMPLATES / engine), "--namespace", case.namespace,
                          "-f", str(values), "-f", str(override), check=False)  # fmt: skip
    assert result.returncode != 0
    assert "schema" in result.stderr and "labels" in result.stderr, result.stderr


# --- Argo CD must look at it too --------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_argocd_regenerates_a_store_when_the_library_changes(engine: str) -> None:
    """Argo CD (controller/state.go, UpdateRevisionForPaths) regenerates an Application's manifests for a new
    revision only when a changed file lies under one of its manifest-generate-paths; git reports a change to
    the library under templates/storeops-lib, not under the symlink in the engine chart."""
    store = charts._store(engine, "small", "local")
    case = next(c for c in charts.ACTIVE if c.engine == engine)
    app = rendering.application(store, case.cluster, "https://git.example.test/fleet.git")
    paths = app["metadata"]["annotations"][constants.ANNOTATION_MANIFEST_PATHS].split(";")
    watched = [p.strip().strip("/") for p in paths]
    library = f"{constants.TEMPLATES_DIR}/{LIBRARY}"
    assert any(library == p or library.startswith(f"{p}/") for p in watched), paths
