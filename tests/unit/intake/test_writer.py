"""Applying queued requests to a work tree: idempotent, in order, rejecting what no longer fits."""

from __future__ import annotations

from pathlib import Path

from generator import entries
from harness import examples
from webhook.intake import queueing, writer


def request(request_id: str, store_id: str, *, action: str = queueing.CREATE, **extra: object) -> queueing.Request:
    content = entries.dump(entries.with_defaults(examples.store_payload(store_id, **extra))) \
        if action != queueing.DELETE else None
    return queueing.Request(id=request_id, store_id=store_id, action=action, content=content, cluster="local",
                            review=False, source="api", client="c", idempotency_key=None, body_hash="h")


def test_applying_twice_changes_nothing_the_second_time(tmp_path: Path) -> None:
    root = examples.example_repo(tmp_path / "repo")
    batch = [request("1", "new-one"), request("2", "bookworm", action=queueing.DELETE), request("3", "new-two")]
    outcomes = writer.Outcomes()
    written = writer.apply_requests(root, batch, outcomes, reviewed=False)
    assert written == ["stores/new-one.yaml", "stores/bookworm.yaml", "stores/new-two.yaml"]
    assert outcomes.landed == ["1", "2", "3"]
    assert not (root / "stores/bookworm.yaml").exists()
    snapshot = {p.name: p.read_bytes() for p in (root / "stores").iterdir()}
    again = writer.Outcomes()
    assert writer.apply_requests(root, batch, again, reviewed=False) == []
    assert again.landed == ["1", "2", "3"] and not again.rejected
    assert {p.name: p.read_bytes() for p in (root / "stores").iterdir()} == snapshot


def test_a_request_whose_id_was_taken_meanwhile_is_rejected_and_leaves_the_file(tmp_path: Path) -> None:
    root = examples.example_repo(tmp_path / "repo")
    original = (root / "stores/acme-outdoor.yaml").read_bytes()
    outcomes = writer.Outcomes()
    assert writer.apply_requests(root, [request("1", "acme-outdoor")], outcomes, reviewed=False) == []
    assert "1" in outcomes.rejected and outcomes.landed == []
    assert (root / "stores/acme-outdoor.yaml").read_bytes() == original


def test_a_request_that_breaks_a_fleet_rule_now_is_rejected(tmp_path: Path) -> None:
    root = examples.example_repo(tmp_path / "repo")
    outcomes = writer.Outcomes()
    clash = request("1", "second-knits", domain="shop.nordicknits.example")
    assert writer.apply_requests(root, [clash, request("2", "fine")], outcomes, reviewed=False) == ["stores/fine.yaml"]
    assert any("already served" in p.message for p in outcomes.rejected["1"])
    assert outcomes.landed == ["2"]


def test_outside_a_review_branch_nothing_touching_a_reviewed_cluster_lands(tmp_path: Path) -> None:
    # Requests queued before the profile turned to review, or carried by a bug, still never land directly.
    root = examples.example_repo(tmp_path / "repo")
    original = (root / "stores/coffee-lab.yaml").read_bytes()
    batch = [request("1", "new-prod", cluster="prod"), request("2", "coffee-lab", action=queueing.DELETE),
             request("3", "coffee-lab", action=queueing.UPDATE, cluster="local"), request("4", "fine")]
    outcomes = writer.Outcomes()
    assert writer.apply_requests(root, batch, outcomes, reviewed=False) == ["stores/fine.yaml"]
    assert outcomes.landed == ["4"]
    assert sorted(outcomes.rejected) == ["1", "2", "3"]
    assert all("prod needs review" in p.message for r in outcomes.rejected.values() for p in r)
    assert (root / "stores/coffee-lab.yaml").read_bytes() == original
    assert not (root / "stores/new-prod.yaml").exists()
    # On a review branch the same delete lands.
    reviewed = writer.Outcomes()
    assert writer.apply_requests(root, batch[1:2], reviewed, reviewed=True) == ["stores/coffee-lab.yaml"]


def test_an_engine_or_cluster_change_is_rejected_even_on_a_review_branch(tmp_path: Path) -> None:
    root = examples.example_repo(tmp_path / "repo")
    original = (root / "stores/bookworm.yaml").read_bytes()
    moved = request("1", "bookworm", action=queueing.UPDATE, engine="medusa", cluster="prod",
                    plan="medium")
    swapped = request("2", "bookworm", action=queueing.UPDATE, engine="woocommerce", plan="medium")
    outcomes = writer.Outcomes()
    assert writer.apply_requests(root, [moved, swapped], outcomes, reviewed=True) == []
    assert [p.field for p in outcomes.rejected["1"]] == ["cluster"]
    assert [p.field for p in outcomes.rejected["2"]] == ["engine"]
    assert "delete the store's namespace and its data" in outcomes.rejected["2"][0].message
    assert (root / "stores/bookworm.yaml").read_bytes() == original
