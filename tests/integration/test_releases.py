"""Releases with the real tools: helm renders a release as it rendered the working chart it was made from,
and `storeops validate --base` refuses a change that edits a committed release."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from generator import constants, operations, releases, releasing
from harness import examples
from tests.integration import test_charts as charts


def _helm_template(helm: Path, chart: Path, values: Path) -> str:
    done = subprocess.run([str(helm), "template", "store-acme-outdoor", str(chart), "--namespace", "store-acme-outdoor",
                           "--values", str(values)], capture_output=True, text=True, check=True, timeout=120)
    return done.stdout


@pytest.mark.parametrize("engine", ["woocommerce", "medusa"])
def test_helm_renders_a_release_as_the_chart_it_was_made_from(tmp_path: Path, engine: str) -> None:
    repo = examples.example_repo(tmp_path / "repo")
    version = releasing.release(repo, engine)
    store = "acme-outdoor" if engine == "woocommerce" else "bookworm"
    values = repo / f"rendered/local/values/{store}.yaml"
    helm = charts.helm_binary()
    working = _helm_template(helm, repo / constants.TEMPLATES_DIR / engine, values)
    released = _helm_template(helm, repo / releases.chart_dir(engine, version), values)
    assert "kind: Deployment" in working or "kind: StatefulSet" in working
    assert released == working
    # Once the working library changes, the release still renders what it did.
    library = repo / constants.LIBRARY_CHART / "templates" / "_storeops.tpl"
    library.write_text(library.read_text().replace("app.kubernetes.io/part-of", "app.kubernetes.io/part-0f", 1))
    assert _helm_template(helm, repo / constants.TEMPLATES_DIR / engine, values) != working
    assert _helm_template(helm, repo / releases.chart_dir(engine, version), values) == working


def test_validate_against_a_base_refuses_an_edited_release(tmp_path: Path) -> None:
    repo = examples.example_repo(tmp_path / "repo")
    releasing.release(repo, "woocommerce")
    examples.git(repo, "init", "-q", "-b", "main")
    examples.git(repo, "add", "-A")
    examples.git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "release")
    assert operations.validate(repo, "HEAD")[1] == []
    # Edited together with its digest file: the digest agrees, the base does not.
    chart = repo / releases.chart_dir("woocommerce", "0.1.0") / "Chart.yaml"
    chart.write_text(chart.read_text() + "# edited\n")
    folder = repo / releases.release_dir("woocommerce", "0.1.0")
    digest = repo / releases.digest_path("woocommerce", "0.1.0")
    digest.write_text(releases.digest({p.relative_to(folder).as_posix(): (p.read_bytes() if not p.is_symlink()
                                       else str(p.readlink()).encode())
                                       for p in folder.rglob("*") if p.is_file() or p.is_symlink()}))
    assert operations.validate(repo)[1] == []
    problems = operations.validate(repo, "HEAD")[1]
    assert sorted(p.path for p in problems) == sorted([chart.relative_to(repo).as_posix(),
                                                       digest.relative_to(repo).as_posix()])
