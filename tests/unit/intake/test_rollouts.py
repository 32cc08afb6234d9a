"""Rollouts without a service: the waves a rollout plans, what counts as ready, and the request it takes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from generator import constants, errors, fleet, operations, releasing, trees, waves
from harness import examples
from webhook.errors import Invalid
from webhook.intake import queueing, rollouts
from webhook.intake.admission import Intake
from webhook.state import Location


def _fleet(tmp_path: Path, *, extra: tuple[str, ...] = ("birch-books", "cedar-crafts", "dune-deli"),
           review: bool = False) -> fleet.Fleet:
    repo = examples.example_repo(tmp_path / "repo")
    for store_id in extra:
        (repo / constants.STORES_DIR / f"{store_id}.yaml").write_text(
            f"id: {store_id}\nname: {store_id}\nengine: woocommerce\nplan: small\ncluster: local\n"
            f"owner:\n  name: O\n  email: o@{store_id}.example\n")
    releasing.release(repo, "woocommerce")
    # The waves alone: without backups, no pre-upgrade backup is waited for (tests/integration/status has those).
    profile = repo / "clusters/local.yaml"
    profile.write_text(examples.without_profile_keys(profile.read_text(), "backups"))
    if review:
        profile = repo / "clusters/local.yaml"
        profile.write_text(profile.read_text().replace("review: false", "review: true"))
    return operations.load(repo)


def test_a_canary_count_then_batches_by_id(tmp_path: Path) -> None:
    planned, problems = waves.plan(_fleet(tmp_path), engine="woocommerce", version="0.1.0", cluster="local",
                                   canary=1, batch=2)
    assert problems == [] and planned is not None
    assert planned.waves == (("acme-outdoor",), ("birch-books", "cedar-crafts"), ("dune-deli",))


def test_named_canaries_go_first(tmp_path: Path) -> None:
    loaded = _fleet(tmp_path)
    planned, _ = waves.plan(loaded, engine="woocommerce", version="0.1.0", cluster="local",
                            canary=("dune-deli", "birch-books"), batch=3)
    assert planned is not None
    assert planned.waves == (("dune-deli", "birch-books"), ("acme-outdoor", "cedar-crafts"))


def test_stores_at_the_version_are_left_out(tmp_path: Path) -> None:
    repo = tmp_path / "r"
    loaded = _fleet(repo)
    path = "stores/birch-books.yaml"
    pinned = loaded.with_store(path, (repo / "repo" / path).read_text() + "chartVersion: 0.1.0\n")
    planned, _ = waves.plan(pinned, engine="woocommerce", version="0.1.0", cluster="local", canary=1, batch=5)
    assert planned is not None
    assert planned.waves == (("acme-outdoor",), ("cedar-crafts", "dune-deli")) and planned.already == ("birch-books",)


@pytest.mark.parametrize(("asked", "field", "words"), [
    ({"version": "0.9.0"}, "version", "no release '0.9.0' (released: 0.1.0)"),
    ({"cluster": "mars"}, "cluster", "no cluster 'mars'"),
    ({"canary": ("bookworm",)}, "canary", "bookworm: not among the woocommerce stores"),
    ({"canary": 0}, "canary", "at least 1"),
    ({"batch": 0}, "batch", "at least 1"),
    ({"engine": "medusa", "version": "0.1.0"}, "version", "medusa has no release"),
])
def test_what_stops_a_plan(tmp_path: Path, asked: dict[str, object], field: str, words: str) -> None:
    arguments: dict[str, object] = {"engine": "woocommerce", "version": "0.1.0", "cluster": "local", "canary": 1,
                                    "batch": 1, **asked}
    planned, problems = waves.plan(_fleet(tmp_path), **arguments)  # type: ignore[arg-type]
    assert planned is None
    assert [p.field for p in problems] == [field] and words in problems[0].message
    assert problems[0].code == errors.REQUEST


def test_a_cluster_that_needs_review_makes_the_plan_one_for_review(tmp_path: Path) -> None:
    planned, problems = waves.plan(_fleet(tmp_path, review=True), engine="woocommerce", version="0.1.0",
                                   cluster="local")
    assert problems == [] and planned is not None and planned.reviewed == ("local",)
    # Without a cluster, every cluster of the engine: prod (review: true in the examples) is named too.
    planned, problems = waves.plan(_fleet(tmp_path / "all"), engine="woocommerce", version="0.1.0")
    assert problems == [] and planned is not None and "prod" in planned.reviewed


def test_a_plan_file_reads_back_and_approves_only_its_stores_at_its_version(tmp_path: Path) -> None:
    text = waves.plan_document(rollout_id="abc123", engine="woocommerce", version="0.2.0", cluster="local",
                               waves=[["a"], ["b", "c"]], by="ops")
    assert waves.read_plan_document(text, rollout_id="abc123")["waves"] == [["a"], ["b", "c"]]
    (tmp_path / "rollouts").mkdir()
    (tmp_path / "rollouts/abc123.yaml").write_text(text)
    assert waves.approves(tmp_path, "abc123", "b", "0.2.0")
    assert not waves.approves(tmp_path, "abc123", "d", "0.2.0")
    assert not waves.approves(tmp_path, "abc123", "b", "0.3.0")
    assert not waves.approves(tmp_path, "other", "b", "0.2.0")
    assert not waves.approves(tmp_path, "../rollouts/abc123", "b", "0.2.0")
    for bad, said in (("waves: []\nid: abc123\n", "waves must be"), ("id: other\n", "not the plan"),
                      ("id: abc123\nengine: woocommerce\nversion: 0.2.0\nwaves: [[a], [a]]\n", "more than one wave"),
                      ("id: [\n", "not YAML")):
        with pytest.raises(ValueError, match=said):
            waves.read_plan_document(bad, rollout_id="abc123")


def _view(status: str, *, change: str = "", since: str = "2026-01-01T00:00:10.000Z") -> dict[str, object]:
    return {"status": status, "change": change, "since": since}


AT_5 = 1767225605.0  # 2026-01-01T00:00:05Z
AT_20 = 1767225620.0


@pytest.mark.parametrize(("view", "commit", "committed_at", "ready"), [
    (_view("ready", change="c1"), "c1", AT_20, True),  # ready for the commit that moved it
    (_view("ready", change="old"), "c1", AT_20, False),  # still the ready of before the move
    (_view("ready", change="c2"), "c1", AT_5, True),  # ready for a later change, reported after the move
    (_view("syncing", change="c1"), "c1", AT_5, False),
    (_view("failed", change="c1"), "c1", AT_5, False),
    (_view("ready", change="old"), "", AT_20, True),  # was at the version already: ready is enough
    ({}, "c1", AT_5, False),
])
def test_ready_means_ready_at_the_commit_that_moved_the_store(view: dict[str, object], commit: str,
                                                              committed_at: float, ready: bool) -> None:
    assert rollouts.Runner._ready(view, commit, committed_at) is ready


def test_moved_and_untouched_follow_the_waves() -> None:
    rollout = rollouts.Rollout(id="r", engine="woocommerce", version="0.2.0", cluster=None,
                               waves=[["a"], ["b", "c"], ["d"]], timeout=60, by="t", created=0)
    assert (rollout.moved(), rollout.untouched()) == ([], ["a", "b", "c", "d"])
    queued = replace(rollout, wave=1, requests={"b": "req-b"})
    assert (queued.moved(), queued.untouched()) == (["a", "b"], ["c", "d"])
    assert [w["state"] for w in queued.view()["waves"]] == ["done", "running", "waiting"]


@pytest.mark.parametrize(("body", "field"), [
    ([], "(top)"),
    ({"engine": "woocommerce"}, "version"),
    ({"engine": "woocommerce", "version": "0.2.0", "colour": 1}, "colour"),
    ({"engine": "woocommerce", "version": "0.2.0", "canary": "a"}, "canary"),
    ({"engine": "woocommerce", "version": "0.2.0", "canary": True}, "canary"),
    ({"engine": "woocommerce", "version": "0.2.0", "batch": 1.5}, "batch"),
    ({"engine": "woocommerce", "version": "0.2.0", "timeout": 0}, "timeout"),
])
def test_a_bad_request_names_its_field(body: object, field: str) -> None:
    with pytest.raises(Invalid) as raised:
        rollouts.parse_start(body)
    assert [p.field for p in raised.value.problems] == [field]


def test_a_request_with_defaults() -> None:
    assert rollouts.parse_start({"engine": "medusa", "version": "1.0.0", "canary": ["x", "y"]}) == {
        "engine": "medusa", "version": "1.0.0", "cluster": None, "canary": ("x", "y"), "batch": 1, "timeout": None}


class Reports:
    """What the status reader would say of each store (the ``StatusView`` the runner reads)."""

    def __init__(self) -> None:
        self.views: dict[str, dict[str, object]] = {}
        self.seq = 0

    def store_status(self, store_id: str) -> dict[str, object] | None:
        return self.views.get(store_id)

    def metrics_text(self) -> str:
        return ""

    def transitions(self, store_id: str) -> list[dict[str, object]]:
        return []


def test_a_wave_queued_before_a_crash_is_found_again_not_taken_for_done(
        tmp_path: Path, state_at: Callable[[str], Location]) -> None:
    repo = examples.example_repo(tmp_path / "repo")
    releasing.release(repo, "woocommerce")
    profile = repo / "clusters/local.yaml"
    profile.write_text(examples.without_profile_keys(profile.read_text(), "backups"))
    queue = queueing.Queue(path=state_at("queue.sqlite3"))
    intake = Intake(queue=queue, mass_delete_share=0.25)
    intake.load_git(files=trees.read_inputs(repo), sha="0" * 40)
    store = rollouts.Rollouts(state_at("state.sqlite3"))
    runner = rollouts.Runner(rollouts=store, intake=intake, status=Reports(), poll=0.01, timeout=60)
    try:
        started = runner.start(engine="woocommerce", version="0.1.0", cluster="local", canary=1, batch=1, timeout=None,
                               by="test")
        assert runner.step(started) is True
        queued = store.get(started.id)
        assert queued is not None and list(queued.requests) == ["acme-outdoor"]
        request_id = queued.requests["acme-outdoor"]
        assert request_id and queue.get(request_id) is not None
        # The crash came after the request was queued and before the rollout recorded it: the entry in the
        # queue is at the version already, yet the store is not moved until that request lands.
        runner.step(store.save(replace(queued, requests={}, queued_at=None)))
        again = store.get(started.id)
        assert again is not None and again.requests == {"acme-outdoor": request_id}
        assert len(queue.for_store("acme-outdoor")) == 1
    finally:
        store.close()
        queue.close()
