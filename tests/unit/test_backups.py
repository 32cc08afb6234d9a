"""Backups in the generator: the profile's settings reach the values, schedules spread, restores are checked."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from generator import backups, fleet, rendering, trees
from harness import examples

REPO = Path(__file__).resolve().parents[2]

BACKUPS = """\
backups:
  endpoint: http://seaweedfs.storeops-backups.svc:8333
  bucket: storeops-backups
  credentialsSecret:
    namespace: storeops-system
    name: backup-s3
  egress:
    namespace: storeops-backups
  finalBackupDays: 14
"""

STORE = """\
id: {id}
name: Shop {id}
engine: medusa
plan: {plan}
cluster: local
owner:
  name: Pat
  email: pat@example.com
"""


def _profile(backups: str) -> str:
    """The local profile with ``backups`` in place of the one it has ('' for none)."""
    text = bytes(trees.read_inputs(REPO)["clusters/local.yaml"]).decode()
    assert "\nbackups:\n" in text, "the local profile keeps backups"
    return examples.without_profile_keys(text, "backups") + backups


def files(*, with_backups: bool = True, **stores: str) -> dict[str, bytes | str]:
    out: dict[str, bytes | str] = dict(trees.read_inputs(REPO))
    out["clusters/local.yaml"] = _profile(BACKUPS if with_backups else "")
    for store_id, text in stores.items():
        out[f"stores/{store_id}.yaml"] = text
    return out


def values_of(built: fleet.Fleet, store_id: str) -> dict:  # type: ignore[type-arg]
    target = next(t for t in built.targets() if t.store.id == store_id)
    rendered = rendering.render_store(target)
    return yaml.safe_load(rendered[rendering.values_path("local", store_id)])  # type: ignore[no-any-return]


def test_a_cluster_with_backups_gives_each_store_its_plan_schedule_and_the_profile_store() -> None:
    built = fleet.build(files(small=STORE.format(id="small", plan="small"), big=STORE.format(id="big", plan="large")))
    assert not built.problems
    small, big = values_of(built, "small"), values_of(built, "big")
    assert small["backup"] == {
        "enabled": True, "schedule": backups.schedule_for("H H * * *", "small"), "retention": 7,
        "s3": {"endpoint": "http://seaweedfs.storeops-backups.svc:8333", "bucket": "storeops-backups",
               "region": "us-east-1", "prefix": "local"},
        "secretName": "storeops-backup", "egress": {"namespace": "storeops-backups"}}
    assert big["backup"]["retention"] == 28
    minute, hour, *rest = big["backup"]["schedule"].split()
    assert hour == "*/6" and 0 <= int(minute) < 60 and rest == ["*", "*", "*"]
    assert "restore" not in small


def test_a_cluster_without_backups_renders_none() -> None:
    built = fleet.build(files(with_backups=False, shop=STORE.format(id="shop", plan="small")))
    assert "backup" not in values_of(built, "shop")


def test_schedules_spread_by_store_id_and_stay_put() -> None:
    schedules = {backups.schedule_for("H H * * *", f"shop-{n}") for n in range(30)}
    assert len(schedules) > 20
    for schedule in schedules:
        minute, hour, *_ = schedule.split()
        assert 0 <= int(minute) < 60 and 0 <= int(hour) < 24
    assert backups.schedule_for("H H * * *", "shop-1") == backups.schedule_for("H H * * *", "shop-1")
    assert backups.schedule_for("30 2 * * 0", "shop-1") == "30 2 * * 0"


def test_a_restored_store_names_its_backup_in_its_values() -> None:
    text = STORE.format(id="again", plan="small") + "restoreFrom: gone/20261127T031700Z-final\n"
    built = fleet.build(files(again=text))
    assert not built.problems
    assert values_of(built, "again")["restore"] == {"from": "gone/20261127T031700Z-final"}


def test_restoring_on_a_cluster_without_backups_is_refused() -> None:
    text = STORE.format(id="again", plan="small") + "restoreFrom: gone/20261127T031700Z-final\n"
    problems = [str(p) for p in fleet.build(files(with_backups=False, again=text)).problems]
    assert problems == ["stores/again.yaml:9: restoreFrom: cluster 'local' keeps no backups (no backups in "
                        "clusters/local.yaml): there is nothing to restore from"]


@pytest.mark.parametrize("reference", ["gone", "gone/yesterday", "Gone/20261127T031700Z-final",
                                       "gone/20261127T031700Z-weekly", "../x/20261127T031700Z-final"])
def test_a_malformed_backup_reference_is_refused_by_the_schema(reference: str) -> None:
    text = STORE.format(id="again", plan="small") + f"restoreFrom: {reference!r}\n"
    problems = [str(p) for p in fleet.build(files(again=text)).problems]
    assert len(problems) == 1 and "restoreFrom: " in problems[0] and "not a backup reference" in problems[0]
    with pytest.raises(ValueError, match="not a backup reference"):
        backups.parse_reference(reference)


def test_an_existing_store_cannot_be_given_a_backup_to_start_from() -> None:
    before = fleet.build(files(shop=STORE.format(id="shop", plan="small")))
    restored = STORE.format(id="shop", plan="small") + "restoreFrom: shop/20261127T031700Z-manual\n"
    after = fleet.build(files(shop=restored))
    problems = [str(p) for p in fleet.change_problems(before, after)]
    assert len(problems) == 1 and "restoreFrom: is set only when a store is requested" in problems[0]
    assert backups.parse_reference("shop/20261127T031700Z-manual") == ("shop", "20261127T031700Z-manual")


def test_a_profile_with_a_bad_endpoint_or_bucket_is_refused() -> None:
    bad = BACKUPS.replace("http://seaweedfs.storeops-backups.svc:8333", "seaweedfs:8333").replace(
        "storeops-backups\n  credentials", "Backups_1\n  credentials")
    out = dict(trees.read_inputs(REPO))
    out["clusters/local.yaml"] = _profile(bad)
    problems = "\n".join(str(p) for p in fleet.build(out).problems)
    assert "backups.endpoint: 'seaweedfs:8333' is not an http(s) URL of a host" in problems
    assert "backups.bucket: 'Backups_1' is not an S3 bucket name" in problems


def test_a_rollback_may_put_back_the_stores_own_pre_upgrade_backup_and_nothing_else() -> None:
    before = fleet.build(files(shop=STORE.format(id="shop", plan="small")))
    for reference, allowed in (("shop/20261127T031700Z-pre-upgrade", True), ("shop/20261127T031700Z-manual", False),
                               ("other/20261127T031700Z-pre-upgrade", False)):
        after = fleet.build(files(shop=STORE.format(id="shop", plan="small") + f"restoreFrom: {reference}\n"))
        assert (fleet.change_problems(before, after) == []) is allowed, reference
        if allowed:  # the chart replaces the store's data with its own backup
            assert values_of(after, "shop")["restore"] == {"from": reference, "replace": True}
