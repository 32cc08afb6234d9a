"""The storeops commands on a real checkout: validate, render, check and plan."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import git
from tests.integration.test_charts import helm_binary

ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n" \
             "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"


def storeops(repo: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "webhook.cli", *args, "--repo", str(repo)]
                          if args[0] != "publish" else [sys.executable, "-m", "webhook.cli", *args],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2],
                          env={**os.environ, **(env or {})}, timeout=120)


def snapshot(root: Path) -> dict[str, str]:
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and ".git" not in path.parts:
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def test_validate_render_check_on_the_examples(example_repo: Path) -> None:
    result = storeops(example_repo, "validate")
    assert result.returncode == 0 and result.stdout.startswith("ok: 4 stores, 2 clusters, 3 plans")
    result = storeops(example_repo, "render")
    assert result.returncode == 0, result.stderr
    assert "no store changes" in result.stdout
    assert storeops(example_repo, "check").returncode == 0


def test_render_adds_changes_and_removes_stores(example_repo: Path) -> None:
    text = (example_repo / "stores/bookworm.yaml").read_text()
    (example_repo / "stores/pages.yaml").write_text(text.replace("bookworm", "pages"))
    (example_repo / "stores/acme-outdoor.yaml").write_text(
        (example_repo / "stores/acme-outdoor.yaml").read_text().replace("plan: small", "plan: medium"))
    (example_repo / "stores/coffee-lab.yaml").unlink()
    result = storeops(example_repo, "render")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("rendered 4 stores: 1 added, 1 changed, 1 removed; 4 files written, 2 removed")
    assert (example_repo / "rendered/local/apps/pages.yaml").is_file()
    assert not (example_repo / "rendered/prod/apps/coffee-lab.yaml").exists()
    assert not (example_repo / "rendered/prod/values/coffee-lab.yaml").exists()
    assert "storage: 40Gi" in (example_repo / "rendered/local/values/acme-outdoor.yaml").read_text()


def test_unchanged_files_keep_their_inode(example_repo: Path) -> None:
    kept = example_repo / "rendered/local/apps/bookworm.yaml"
    before = kept.stat()
    (example_repo / "stores/acme-outdoor.yaml").write_text(
        (example_repo / "stores/acme-outdoor.yaml").read_text().replace("Acme Outdoor Gear", "Acme Gear"))
    assert storeops(example_repo, "render").returncode == 0
    after = kept.stat()
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)


def test_check_fails_on_stale_output(example_repo: Path) -> None:
    (example_repo / "rendered/local/values/bookworm.yaml").write_text("edited: by hand\n")
    (example_repo / "rendered/local/apps/stray.yaml").write_text("kind: Stray\n")
    result = storeops(example_repo, "check")
    assert result.returncode == 1
    assert "rendered/local/values/bookworm.yaml" in result.stdout
    assert "rendered/local/apps/stray.yaml" in result.stdout
    assert storeops(example_repo, "render").returncode == 0
    assert not (example_repo / "rendered/local/apps/stray.yaml").exists()
    assert storeops(example_repo, "check").returncode == 0


BAD_INPUTS = {
    "malformed": ("stores/bookworm.yaml", "id: bookworm\nname: [unclosed\n", "stores/bookworm.yaml:3: malformed YAML"),
    "alias bomb": ("stores/bomb.yaml", ALIAS_BOMB, "stores/bomb.yaml:1: defines the YAML anchor &a"),
    "wrong type": ("stores/bookworm.yaml", None, "stores/bookworm.yaml:3: name: must be a string, not list"),
    "unknown key": ("stores/bookworm.yaml", None, "stores/bookworm.yaml:11: shoe_size: unknown field"),
    "duplicate id": ("stores/copy.yaml", None, "stores/copy.yaml:2: id: 'bookworm' does not match the file name"),
    "path id": ("stores/x.yaml", None, "stores/x.yaml:2: id: '../x': lower-case letters"),
    "upper id": ("stores/A_B.yaml", None, "stores/A_B.yaml:2: id: 'A_B': lower-case letters"),
    "unicode id": ("stores/ünï.yaml", None, "id: 'ünï': lower-case letters"),
    "200 chars": ("stores/" + "a" * 200 + ".yaml", None, "id: is 200 characters"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_named_and_nothing_is_written(example_repo: Path, case: str) -> None:
    path, text, expected = BAD_INPUTS[case]
    original = (example_repo / "stores/bookworm.yaml").read_text()
    if text is None:
        text = {
            "wrong type": original.replace("name: Bookworm Books", "name: [Bookworm]"),
            "unknown key": original + "shoe_size: 44\n",
            "duplicate id": original,
            "path id": original.replace("id: bookworm", 'id: "../x"'),
            "upper id": original.replace("id: bookworm", "id: A_B"),
            "unicode id": original.replace("id: bookworm", "id: ünï"),
            "200 chars": original.replace("id: bookworm", "id: " + "a" * 200),
        }[case]
    (example_repo / path).write_text(text)
    before = snapshot(example_repo / "rendered")
    result = storeops(example_repo, "render")
    assert result.returncode == 1
    assert expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert snapshot(example_repo / "rendered") == before


def test_empty_stores_folder_does_not_delete_the_fleet(example_repo: Path) -> None:
    for entry in (example_repo / "stores").glob("*.yaml"):
        entry.unlink()
    before = snapshot(example_repo / "rendered")
    result = storeops(example_repo, "render")
    assert result.returncode == 1
    assert "no store entries are left; refusing to remove all 4 stores" in result.stderr
    assert snapshot(example_repo / "rendered") == before
    result = storeops(example_repo, "render", "--allow-mass-delete")
    assert result.returncode == 0, result.stderr
    remaining = sorted(str(p.relative_to(example_repo)) for p in (example_repo / "rendered").rglob("*.yaml"))
    assert remaining == ["rendered/local/root.yaml", "rendered/prod/root.yaml"]


def test_mass_delete_share_is_configurable(example_repo: Path) -> None:
    for store_id in ("bookworm", "coffee-lab"):
        (example_repo / f"stores/{store_id}.yaml").unlink()
    result = storeops(example_repo, "render")
    assert result.returncode == 1 and "refusing to remove 2 of 4 stores at once (limit 1)" in result.stderr
    result = storeops(example_repo, "render", env={"STOREOPS_MASS_DELETE_SHARE": "0.5"})
    assert result.returncode == 0, result.stderr
    bad = storeops(example_repo, "render", env={"STOREOPS_MASS_DELETE_SHARE": "lots"})
    assert bad.returncode == 1 and "STOREOPS_MASS_DELETE_SHARE has value 'lots'. Not a number." in bad.stderr


def test_plan_against_a_base_revision(example_repo: Path) -> None:
    text = (example_repo / "stores/bookworm.yaml").read_text()
    (example_repo / "stores/pages.yaml").write_text(text.replace("bookworm", "pages"))
    (example_repo / "stores/coffee-lab.yaml").unlink()
    result = storeops(example_repo, "plan", "--base", "HEAD")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "plan against HEAD: 1 added, 1 removed"
    assert "  + pages" in lines and "  - coffee-lab" in lines
    assert "+++ b/rendered/local/apps/pages.yaml" in result.stdout
    assert "--- a/rendered/prod/apps/coffee-lab.yaml" in result.stdout
    git(example_repo, "add", "-A")
    git(example_repo, "commit", "-qm", "change stores")
    result = storeops(example_repo, "plan", "--base", "HEAD~1", "--json")
    assert '"added": [\n    "pages"\n  ]' in result.stdout


def test_plan_shows_the_images_a_profile_change_gives_every_store_of_its_cluster(example_repo: Path) -> None:
    profile = example_repo / "clusters/prod.yaml"
    profile.write_text(profile.read_text() + "images:\n  registry: registry.internal.example/hub\n")
    result = storeops(example_repo, "plan", "--base", "HEAD")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "plan against HEAD: 2 changed"
    assert "images of cluster 'prod' changed: they apply to every store on it (coffee-lab, nordic-knits)" in lines
    at = lines.index("  ~ nordic-knits")
    assert lines[at + 1] == "      images (from clusters/prod.yaml; * = chart default):"
    assert lines[at + 3].split() == ["mariadb", "registry.internal.example/hub/library/mariadb:11.4.8"]
    # The Medusa image is on ghcr.io, not Docker Hub: it stays the chart's.
    assert any(line.split() == ["medusa", "ghcr.io/storeops/medusa-store:2.21.2", "*"] for line in lines)
    assert "+    repository: registry.internal.example/hub/library/redis" in lines
    as_json = json.loads(storeops(example_repo, "plan", "--base", "HEAD", "--json").stdout)
    assert as_json["imageChanges"] == {"prod": ["coffee-lab", "nordic-knits"]}
    assert as_json["images"]["coffee-lab"]["images"]["postgres"] == \
        "registry.internal.example/hub/library/postgres:17.6-bookworm"
    # Stores on a profile without images show no images.
    (example_repo / "stores/acme-outdoor.yaml").write_text(
        (example_repo / "stores/acme-outdoor.yaml").read_text().replace("Acme Outdoor Gear", "Acme Gear"))
    profile.write_text(profile.read_text().replace("images:\n  registry: registry.internal.example/hub\n", ""))
    result = storeops(example_repo, "plan", "--base", "HEAD")
    assert result.stdout.splitlines()[:3] == ["plan against HEAD: 1 changed", "  ~ acme-outdoor",
                                              "      images (from clusters/local.yaml; * = chart default):"]


def test_validate_json_lists_every_problem(example_repo: Path) -> None:
    (example_repo / "stores/bad.yaml").write_text("id: bad\nplan: huge\n")
    result = storeops(example_repo, "validate", "--json")
    assert result.returncode == 1
    assert '"field": "plan"' in result.stdout and '"field": "engine"' in result.stdout


def test_validate_and_plan_against_a_base_refuse_a_new_engine_or_cluster(example_repo: Path) -> None:
    path = example_repo / "stores/bookworm.yaml"
    text = path.read_text()
    path.write_text(text.replace("engine: medusa", "engine: woocommerce").replace("cluster: local", "cluster: prod"))
    # Without a base there is nothing to compare with: the entry itself is valid.
    assert storeops(example_repo, "validate").returncode == 0
    for command in ("validate", "plan"):
        result = storeops(example_repo, command, "--base", "HEAD")
        assert result.returncode == 1, (command, result.stdout, result.stderr)
        output = result.stdout + result.stderr
        assert "stores/bookworm.yaml:4: engine: cannot change from 'medusa' to 'woocommerce'" in output
        assert "stores/bookworm.yaml:6: cluster: cannot change from 'local' to 'prod'" in output
    # A store deleted and another added with the same engine change is no change of a store.
    path.unlink()
    (example_repo / "stores/pages.yaml").write_text(text.replace("bookworm", "pages"))
    assert storeops(example_repo, "validate", "--base", "HEAD").returncode == 0


def test_rotate_password_raises_the_count_and_rerenders_the_store_in_the_checkout(example_repo: Path) -> None:
    entry = example_repo / "stores/bookworm.yaml"
    values = example_repo / "rendered/local/values/bookworm.yaml"
    assert "adminPasswordRotation" not in entry.read_text() and "rotation" not in values.read_text()
    others = {p: h for p, h in snapshot(example_repo).items() if "bookworm" not in p}
    for count in (1, 2):
        result = storeops(example_repo, "rotate-password", "bookworm")
        assert result.returncode == 0, result.stderr
        assert f"adminPasswordRotation is now {count}" in result.stdout and "Commit and push it" in result.stdout
        assert f"adminPasswordRotation: {count}\n" in entry.read_text()
        rendered = yaml.safe_load(values.read_text())["credentials"]
        assert rendered["rotation"] == count and rendered["image"]["repository"]  # the profile's image stays
        assert storeops(example_repo, "check").returncode == 0
    # Nothing else in the checkout changed; the field sits where the schema puts it.
    assert {p: h for p, h in snapshot(example_repo).items() if "bookworm" not in p} == others
    lines = entry.read_text().splitlines()
    assert lines.index("adminPasswordRotation: 2") > max(i for i, line in enumerate(lines) if line.startswith("owner"))
    # An unknown store is named; the count never goes down against a base.
    missing = storeops(example_repo, "rotate-password", "nosuch")
    assert missing.returncode == 1 and "no store 'nosuch'" in missing.stderr
    git(example_repo, "commit", "-qam", "rotate")
    entry.write_text(entry.read_text().replace("adminPasswordRotation: 2", "adminPasswordRotation: 1"))
    lowered = storeops(example_repo, "validate", "--base", "HEAD")
    assert lowered.returncode == 1
    assert "adminPasswordRotation: cannot go down from 2 to 1" in lowered.stdout + lowered.stderr


def test_a_store_s_volumes_never_shrink_by_plan_or_by_the_plans_file(example_repo: Path) -> None:
    bookworm = example_repo / "stores/bookworm.yaml"
    bookworm.write_text(bookworm.read_text().replace("plan: medium", "plan: small"))
    assert storeops(example_repo, "validate").returncode == 0  # nothing to compare with
    result = storeops(example_repo, "validate", "--base", "HEAD")
    assert result.returncode == 1
    assert ("stores/bookworm.yaml:5: plan: plan 'medium' -> 'small' would shrink the store's volumes "
            "(database 10Gi -> 2Gi, content 10Gi -> 2Gi): Kubernetes cannot make a volume smaller") in result.stdout
    # Growing needs a StorageClass that can expand volumes, which the local profile does not say it has.
    bookworm.write_text(bookworm.read_text().replace("plan: small", "plan: large"))
    result = storeops(example_repo, "validate", "--base", "HEAD")
    assert result.returncode == 1
    assert ("stores/bookworm.yaml:5: plan: plan 'medium' -> 'large' would grow store 'bookworm''s volumes "
            "(database 10Gi -> 40Gi, content 10Gi -> 40Gi), but cluster 'local' cannot grow a volume in place") \
        in result.stdout
    local = example_repo / "clusters/local.yaml"
    local.write_text(local.read_text() + "allowVolumeExpansion: true\n")
    assert storeops(example_repo, "validate", "--base", "HEAD").returncode == 0
    git(example_repo, "checkout", "--", "stores/bookworm.yaml", "clusters/local.yaml")
    # A plan made smaller shrinks every store on it: each is named.
    plans = example_repo / "templates/plans.yaml"
    plans.write_text(plans.read_text().replace("      database: 40Gi", "      database: 30Gi"))
    result = storeops(example_repo, "validate", "--base", "HEAD")
    assert result.returncode == 1
    assert "stores/nordic-knits.yaml:5: plan: plan 'large' changed would shrink the store's volumes " \
           "(database 40Gi -> 30Gi)" in result.stdout
    assert "bookworm" not in result.stdout


def test_rollback_puts_the_entry_back_before_its_last_change_and_keeps_the_password_count(
        example_repo: Path) -> None:
    entry = example_repo / "stores/acme-outdoor.yaml"
    original = entry.read_text()
    assert storeops(example_repo, "rollback", "acme-outdoor").returncode == 1  # one version only: nothing to go to
    first = git(example_repo, "rev-parse", "HEAD")
    entry.write_text(original.replace("plan: small", "plan: medium") + "domain: shop.acme-outdoor.example\n")
    assert storeops(example_repo, "rotate-password", "acme-outdoor").returncode == 0
    assert storeops(example_repo, "render").returncode == 0
    git(example_repo, "commit", "-qam", "acme-outdoor: medium, own domain, new password")
    # Back before the change would shrink the volumes: refused, nothing written.
    refused = storeops(example_repo, "rollback", "acme-outdoor")
    assert refused.returncode == 1 and "would shrink the store's volumes" in refused.stderr
    assert git(example_repo, "status", "--porcelain") == ""
    entry.write_text(entry.read_text().replace("domain: shop.acme-outdoor.example\n", ""))
    assert storeops(example_repo, "render").returncode == 0
    git(example_repo, "commit", "-qam", "acme-outdoor: no own domain")
    entry.write_text(entry.read_text() + "domain: broken.acme-outdoor.example\n")
    assert storeops(example_repo, "render").returncode == 0
    git(example_repo, "commit", "-qam", "acme-outdoor: another domain")
    done = storeops(example_repo, "rollback", "acme-outdoor")
    assert done.returncode == 0, done.stderr
    assert "domain" not in entry.read_text() and "plan: medium" in entry.read_text()
    assert "adminPasswordRotation: 1" in entry.read_text()
    assert "broken.acme-outdoor.example" not in (example_repo / "rendered/local/values/acme-outdoor.yaml").read_text()
    assert storeops(example_repo, "check").returncode == 0
    # --to a revision: the original entry, but the password count stays (and the plan may not shrink).
    git(example_repo, "checkout", "-q", "--", ".")
    to_first = storeops(example_repo, "rollback", "acme-outdoor", "--to", first)
    assert to_first.returncode == 1 and "would shrink" in to_first.stderr
    unknown = storeops(example_repo, "rollback", "acme-outdoor", "--to", "nosuchrev")
    assert unknown.returncode == 1 and "not in revision 'nosuchrev'" in unknown.stderr


def test_plan_lists_every_store_a_chart_change_reaches_with_one_rendered_diff(example_repo: Path) -> None:
    values = example_repo / "templates/medusa/values.yaml"
    values.write_text(values.read_text().replace("  port: 9000\n", "  port: 9001\n", 1))
    helm = {"STOREOPS_HELM": str(helm_binary())}
    result = storeops(example_repo, "plan", "--base", "HEAD", env=helm)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("plan against HEAD: no store changes in the generated files; charts changed (below)")
    assert ("chart 'medusa' changed (1 files: templates/medusa/values.yaml): it is the chart of 2 medusa stores "
            "(local: 1, prod: 1)") in out
    assert "  ~ bookworm (chart)\n  ~ coffee-lab (chart)\n" in out and "woocommerce" not in out
    assert "the change to one of them, bookworm, as helm renders it:" in out
    assert '-              value: "9000"\n+              value: "9001"\n' in out
    # A change to the library reaches both engines; as JSON, with the stores per cluster.
    library = example_repo / "templates/storeops-lib/templates/_storeops.tpl"
    library.write_text(library.read_text().replace("readOnlyRootFilesystem: {{ . }}",
                                                   "readOnlyRootFilesystem: {{ . }}\nprivileged: false"))
    as_json = json.loads(storeops(example_repo, "plan", "--base", "HEAD", "--json", env=helm).stdout)
    charts = as_json["charts"]
    assert set(charts) == {"medusa", "woocommerce"}
    assert charts["woocommerce"]["files"] == ["templates/storeops-lib/templates/_storeops.tpl"]
    assert charts["woocommerce"]["stores"] == ["acme-outdoor", "nordic-knits"]
    assert charts["woocommerce"]["byCluster"] == {"local": 1, "prod": 1}
    assert re.search(r"^\+ +privileged: false$", charts["woocommerce"]["sampleDiff"], re.M)
    # Without helm the stores are still listed, and the output says how to see the rendered change.
    bare = storeops(example_repo, "plan", "--base", "HEAD", env={"STOREOPS_HELM": "/nonexistent/helm"})
    assert "  ~ acme-outdoor (chart)" in bare.stdout and "set STOREOPS_HELM or put helm on PATH" in bare.stdout


def test_validate_refuses_an_id_with_a_trailing_newline(example_repo: Path) -> None:
    text = (example_repo / "stores/bookworm.yaml").read_text()
    (example_repo / "stores/bookworm.yaml").write_text(text.replace("id: bookworm", 'id: "bookworm\\n"'))
    result = storeops(example_repo, "validate")
    assert result.returncode == 1
    assert "stores/bookworm.yaml:2: id: 'bookworm\\n'" in result.stdout, result.stdout


def test_an_entry_from_before_the_callback_rule_keeps_publishing_without_its_callback(example_repo: Path) -> None:
    """A rule added later must not stop the fleet: the old entry is a warning, its callback is not rendered."""
    path = example_repo / "stores/bookworm.yaml"
    path.write_text(path.read_text() + "callbackUrl: http://169.254.169.254/latest/\n")
    git(example_repo, "commit", "-qam", "an entry written before the rule")
    result = storeops(example_repo, "validate")
    assert result.returncode == 0, result.stdout
    assert "warning: stores/bookworm.yaml:11: callbackUrl: points inside the platform" in result.stdout
    assert storeops(example_repo, "render").returncode == 0
    assert "callback-url" not in (example_repo / "rendered/local/apps/bookworm.yaml").read_text()
    # Another store's change goes through; a change that sets such a URL does not.
    (example_repo / "stores/pages.yaml").write_text((example_repo / "stores/acme-outdoor.yaml").read_text()
                                                      .replace("acme-outdoor", "pages"))
    assert storeops(example_repo, "plan", "--base", "HEAD").returncode == 0
    other = example_repo / "stores/acme-outdoor.yaml"
    other.write_text(other.read_text() + "callbackUrl: http://10.0.0.8/\n")
    refused = storeops(example_repo, "plan", "--base", "HEAD")
    assert refused.returncode == 1 and "stores/acme-outdoor.yaml" in refused.stderr
