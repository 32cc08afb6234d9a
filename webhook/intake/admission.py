"""Intake: check a store request against Git and the queue, and queue it durably.

The service keeps two views of the fleet: ``git`` (the remote's branch as the writer last saw it)
and ``overlay`` (that plus every request still queued or in review). A request is checked against
the overlay with the generator's own rules (schema, unique id and host, known cluster, capacity),
so two queued requests cannot take the same id or domain, and then stored before it is answered.
Checking and storing happen under one lock, so the 409 check and the insert cannot interleave in
one process. Several processes may share the queue's database: before each check the overlay takes
in what others queued since (the queue's ``version`` says when there is something), and a request
checked against an overlay that was out of date all the same fails on the queue's constraint
(``queueing.Stale``) and is checked again: two processes asked for the same new id at once give one
202 and one 409.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from generator import constants, entries, errors, fleet, validation
from generator.errors import Problem
from webhook.errors import Conflict, Forbidden, Invalid, NotFound, NotReady
from webhook.intake import queueing

log = logging.getLogger(__name__)

#: How many times a request that raced another process's is checked again before the answer is 409.
_ATTEMPTS = 20


@dataclass(frozen=True)
class Caller:
    """Who sent a request: ``client`` keys idempotency and rate limits; ``source`` is api/form/webhook."""

    client: str
    source: str
    idempotency_key: str | None = None
    #: What a key is given for: the request's method and path (a key names one request, on one target).
    scope: str = ""
    #: The stated reason to delete beyond the mass-delete limit ('' for none); kept with the request.
    mass_delete_reason: str = ""
    #: An owner-scoped caller's email: it reaches only stores whose owner this is.
    owner: str = ""
    #: Why a change is asked for (a rollback's reason): kept with the request and in the commit message.
    reason: str = ""
    #: A change a reviewed plan approved (a rollout's wave after its plan was merged): it is committed
    #: without a pull request of its own; the writer checks the plan in Git.
    planned: bool = False

    def owns(self, email: str) -> bool:
        return not self.owner or self.owner.casefold() == email.casefold()


def body_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


@dataclass(frozen=True)
class Snapshot:
    git: fleet.Fleet
    overlay: fleet.Fleet
    git_sha: str
    #: The text of every store file in ``overlay`` (what an update patches).
    texts: Mapping[str, str] = field(default_factory=dict)


class Intake:
    def __init__(self, *, queue: queueing.Queue, mass_delete_share: float, mass_delete_window: float = 3600.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.queue = queue
        self.mass_delete_share = mass_delete_share
        #: Deletions are counted per cluster over this many seconds, across requests and restarts.
        self.mass_delete_window = mass_delete_window
        self.clock = clock
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._views: tuple[tuple[int, int], dict[str, dict[str, Any]]] | None = None
        #: Grows with every new snapshot (a key for what is built from it).
        self._generation = 0
        #: The queue's version the overlay is known to be up to date with; every request with a higher
        #: ``seq`` than ``_seen`` is not in the overlay yet, unless it is one of ``_applied``.
        self._synced = -1
        self._seen = 0
        self._applied: set[str] = set()
        #: Per store, the ``seq`` of its latest request the overlay holds: what the next one ``follows``.
        self._heads: dict[str, int] = {}

    @property
    def ready(self) -> bool:
        return self._snapshot is not None

    def snapshot(self) -> Snapshot:
        if self._snapshot is None:
            raise NotReady("the service has not read the Git remote yet")
        return self._snapshot

    def load_git(self, *, files: Mapping[str, bytes], sha: str) -> None:
        """Take the remote's inputs as the writer sees them; re-apply what is still queued on top."""
        git = fleet.build(files)
        texts = {p: c.decode("utf-8", "replace") for p, c in files.items()
                 if p.startswith(constants.STORES_DIR + "/")}
        with self._lock:
            synced = self.queue.version
            heads, seen = self.queue.heads()
            overlay = git
            active = self.queue.active()
            for request in active:
                overlay = overlay.with_store(request.path, request.content)
                _set_text(texts, request.path, request.content)
            self._generation += 1
            self._snapshot = Snapshot(git, overlay, sha, texts)
            self._synced, self._seen, self._heads = synced, seen, heads
            self._applied = {r.id for r in active}
        log.info("loaded %d stores from git at %s", len(git.store_ids()), sha[:12] or "(empty)")

    # --- the queue's other writers ------------------------------------------------------------------

    def _catch_up(self) -> None:
        """Take into the overlay what other processes on the queue's database queued since it was built
        (under the lock). Requests they finished stay in it as they are, as this process's own do until
        the writer reads Git again; requests they rejected are left out."""
        version = self.queue.version
        if version == self._synced or self._snapshot is None:
            return
        snapshot = self._snapshot
        overlay, texts = snapshot.overlay, dict(snapshot.texts)
        newer = self.queue.after(self._seen)
        for request in newer:
            self._heads[request.store_id] = max(self._heads.get(request.store_id, 0), request.seq)
            if request.id in self._applied or request.status == queueing.REJECTED:
                continue
            overlay = overlay.with_store(request.path, request.content)
            _set_text(texts, request.path, request.content)
            self._applied.add(request.id)
        if newer:
            self._seen = max(self._seen, newer[-1].seq)
            self._generation += 1
            self._snapshot = Snapshot(snapshot.git, overlay, snapshot.git_sha, texts)
        self._synced = version

    def _add(self, request: queueing.Request, *, check: Callable[[], None] | None = None) -> queueing.Request:
        """Queue ``request`` after the store's latest request the overlay holds (under the lock)."""
        request = replace(request, follows=self._heads.get(request.store_id, 0))
        try:
            added, version = self.queue.add_counted(request, check=check)
        except queueing.Stale:
            self._synced = -1  # the next check catches up first
            raise
        if version == self._synced + 1 and added.seq == self._seen + 1:
            self._synced, self._seen = version, added.seq  # nothing else was queued in between
        self._applied.add(added.id)
        self._heads[added.store_id] = added.seq
        return added

    def _admit(self, caller: Caller, body: bytes, store_id: str,
               check: Callable[[], queueing.Request]) -> tuple[queueing.Request, bool]:
        """A replay's first request, or ``check()`` run against an overlay that is up to date; checked again
        when another process queued a request of the same store in the meantime."""
        for attempt in range(_ATTEMPTS):
            if attempt:  # another process won the last round: let it finish, with a little jitter
                time.sleep(random.uniform(0, 0.005 * min(attempt, 8)))
            with self._lock:
                self._catch_up()
                first = self._replay(caller, body)
                if first is not None:
                    return first, False
                try:
                    return check(), True
                except queueing.Stale as e:
                    if e.key:  # the same request, queued by another process first: a replay
                        first = self._replay(caller, body)
                        if first is not None:
                            return first, False
                    log.info("request for %s raced another process's; checking again", store_id)
        raise Conflict(f"store {store_id!r} is being changed by other requests at this moment; try again")

    # --- requests ---------------------------------------------------------------------------------

    def _replay(self, caller: Caller, body: bytes) -> queueing.Request | None:
        if not caller.idempotency_key:
            return None
        first = self.queue.by_idempotency_key(client=caller.client, key=caller.idempotency_key)
        if first is None:
            return None
        if first.scope and first.scope != caller.scope:
            raise Invalid(f"Idempotency-Key {caller.idempotency_key!r} was first used for {first.scope}; a key "
                          f"names one request: send {caller.scope} with a new key",
                          [Problem("request", 0, "Idempotency-Key", f"already used for {first.scope}",
                                   errors.REQUEST)])
        if first.body_hash != body_hash(body):
            raise Conflict(f"Idempotency-Key {caller.idempotency_key!r} was already used with a different request")
        return first

    def create(self, *, data: Any, caller: Caller, body: bytes) -> tuple[queueing.Request, bool]:
        """Check and queue a new store; returns the request and whether it is new (not a replay)."""
        asked = data.get("id") if isinstance(data, dict) else None
        return self._admit(caller, body, str(asked), lambda: self._create(data=data, caller=caller, body=body))

    def _create(self, *, data: Any, caller: Caller, body: bytes) -> queueing.Request:
        snapshot = self.snapshot()
        store_id, content, after = self._check_create(snapshot, data)
        path = entries.path_for(store_id)
        entry = after.stores[path].entry
        assert entry is not None
        if not caller.owns(entry.store.owner.email):
            raise Forbidden(f"this token may only request stores owned by {caller.owner}")
        return self._queue(snapshot, after, path, store_id, queueing.CREATE, content, caller, body)

    def update(self, *, store_id: str, patch: Any, caller: Caller, body: bytes) -> tuple[queueing.Request, bool]:
        """Check and queue a change of an existing store's fields (a JSON merge patch)."""
        return self._admit(caller, body, store_id,
                           lambda: self._update(store_id=store_id, patch=patch, caller=caller, body=body))

    def _update(self, *, store_id: str, patch: Any, caller: Caller, body: bytes) -> queueing.Request:
        snapshot = self.snapshot()
        path = entries.path_for(store_id)
        held = snapshot.overlay.stores.get(path)
        text = snapshot.texts.get(path)
        if held is None or held.entry is None or text is None or not caller.owns(held.entry.store.owner.email):
            raise NotFound(f"no store {store_id!r} in Git or in the queue")
        if callable(patch):  # made from the entry as Git and the queue have it, under the lock
            patch = patch(held.entry)
        if not isinstance(patch, dict) or not patch:
            raise Invalid("the request must be a JSON object of the fields to change",
                          [Problem("request", 0, "(top)", "must be a non-empty mapping of fields", errors.REQUEST)])
        if entries.too_deep(patch):
            raise Invalid("the request nests too deeply",
                          [Problem("request", 0, "(top)", "nests too deeply", errors.REQUEST)])
        if "id" in patch and patch["id"] != store_id:
            raise Invalid("a store's id cannot change", [Problem(
                path, 0, "id", "cannot change; request a new store and delete this one", errors.IMMUTABLE)])
        content = entries.merge_patch(text, patch)
        after = snapshot.overlay.with_store(path, content)
        _refuse_new_problems(snapshot.overlay, after, path, taken="the store's domain is already taken")
        entry = after.stores[path].entry
        assert entry is not None
        if not caller.owns(entry.store.owner.email):
            raise Forbidden(f"this token may only give stores to {caller.owner}")
        return self._queue(snapshot, after, path, store_id, queueing.UPDATE, content, caller, body)

    def rotate_password(self, *, store_id: str, caller: Caller, body: bytes) -> tuple[queueing.Request, bool]:
        """Queue a change of the shop admin's password: ``adminPasswordRotation`` one above what Git and the
        queue have (two requests at once make two changes, each one up)."""
        return self.update(store_id=store_id, caller=caller, body=body,
                           patch=lambda held: {"adminPasswordRotation": held.store.password_rotation + 1})

    def rollback(self, *, store_id: str, entry: Mapping[str, Any], revision: str, caller: Caller,
                 body: bytes, restore_from: str | None = None) -> tuple[queueing.Request, bool]:
        """Queue the store's entry as it was at ``revision`` (``entry``), keeping what never goes back
        (the password rotation count); with ``restore_from``, its data goes back to that pre-upgrade backup.
        409 when that is what the store has now."""
        def patch(held: validation.Entry) -> dict[str, Any]:
            change = entries.rollback_patch(held.doc.data, entry, restore_from)
            if not change:
                raise Conflict(f"store {store_id!r} already has its entry as at {revision[:12]}: nothing to roll back")
            return change

        return self.update(store_id=store_id, patch=patch, caller=caller, body=body)

    def restore(self, *, reference: str, to: str, entry: Mapping[str, Any], caller: Caller,
                body: bytes) -> tuple[queueing.Request, bool]:
        """Queue a new store ``to`` that starts from the backup ``reference`` (``<store>/<backup id>``): the
        backed-up store's name, engine, plan, cluster and owner, with ``restoreFrom``. Its admin password
        is changed once after the restore (``adminPasswordRotation: 1``): the backup holds the old store's,
        and the owner's credentials link then shows the one the restored shop has."""
        data = {key: entry[key] for key in ("name", "engine", "plan", "cluster", "owner") if key in entry}
        return self.create(data={"id": to, **data, "adminPasswordRotation": 1, "restoreFrom": reference},
                           caller=caller, body=body)

    def _queue(self, snapshot: Snapshot, after: fleet.Fleet, path: str, store_id: str, action: str, content: str,
               caller: Caller, body: bytes) -> queueing.Request:
        """Queue a checked create or update and make it part of the overlay (under the lock)."""
        entry = after.stores[path].entry
        assert entry is not None
        request = self._add(queueing.Request(
            id=str(uuid.uuid4()), store_id=store_id, action=action, content=content,
            cluster=entry.store.cluster,
            review=not caller.planned and self._needs_review(snapshot, after, path, store_id),
            source=caller.source, client=caller.client,
            idempotency_key=caller.idempotency_key, body_hash=body_hash(body), scope=caller.scope,
            override=caller.reason))
        self._generation += 1
        self._snapshot = Snapshot(snapshot.git, after, snapshot.git_sha, _with_text(snapshot.texts, path, content))
        return request

    def _needs_review(self, snapshot: Snapshot, after: fleet.Fleet, path: str, store_id: str) -> bool:
        """Whether a change goes through review: it touches a reviewed cluster, as it is in Git, as the
        queue has it, or as the change leaves it; or a change of the same store already waits in review.

        The last keeps a queued review change from landing on the branch inside a later direct change,
        whose content is built on top of it.
        """
        if any(fleet.reviewed_clusters(before, after, path) for before in (snapshot.git, snapshot.overlay)):
            return True
        return any(r.review for r in self.queue.active() if r.store_id == store_id)

    def _check_create(self, snapshot: Snapshot, data: Any) -> tuple[str, str, fleet.Fleet]:
        """The new store's id, its file's text, and the overlay with it; raises 409 or 422."""
        if not isinstance(data, dict):
            raise Invalid("the request must be a JSON object of store fields",
                          [Problem("request", 0, "(top)", "must be a mapping of fields", errors.REQUEST)])
        if entries.too_deep(data):
            raise Invalid("the request nests too deeply",
                          [Problem("request", 0, "(top)", "nests too deeply", errors.REQUEST)])
        store_id = data.get("id")
        safe = validation.is_store_id(store_id)
        path = entries.path_for(store_id) if safe and isinstance(store_id, str) else "stores/(request).yaml"
        overlay = snapshot.overlay
        if safe and path in overlay.stores:
            where = "in Git" if path in snapshot.git.stores else "by a queued request"
            raise Conflict(f"store id {store_id!r} is already taken {where}",
                           [Problem(path, 0, "id", f"{store_id!r} is already taken {where}", errors.ID_TAKEN)])
        content = entries.dump(entries.with_defaults(data))
        after = overlay.with_store(path, content)
        # An unusable id already has its own problem; the file-name mismatch it causes says nothing more.
        _refuse_new_problems(overlay, after, path, taken="the store's id or domain is already taken",
                             ignore=None if safe else errors.FILE_NAME)
        assert isinstance(store_id, str)
        return store_id, content, after

    def delete(self, *, store_id: str, caller: Caller, body: bytes) -> tuple[queueing.Request, bool]:
        return self._admit(caller, body, store_id, lambda: self._delete(store_id=store_id, caller=caller, body=body))

    def _delete(self, *, store_id: str, caller: Caller, body: bytes) -> queueing.Request:
        snapshot = self.snapshot()
        path = entries.path_for(store_id)
        held = snapshot.overlay.stores.get(path)
        if held is not None and held.entry is not None and not caller.owns(held.entry.store.owner.email):
            held = None
        if held is None or held.entry is None:
            if caller.owner:
                raise NotFound(f"no store {store_id!r} in Git or in the queue")
            if any(r.action == queueing.DELETE for r in self.queue.active() if r.store_id == store_id):
                raise Conflict(f"store {store_id!r} is already being deleted")
            raise NotFound(f"no store {store_id!r} in Git or in the queue")
        cluster = held.entry.store.cluster
        after = snapshot.overlay.with_store(path, None)
        # Counted in the insert's transaction: deletions other processes queue cannot slip in between.
        request = self._add(queueing.Request(
            id=str(uuid.uuid4()), store_id=store_id, action=queueing.DELETE, content=None,
            cluster=cluster, review=self._needs_review(snapshot, after, path, store_id),
            source=caller.source, client=caller.client,
            idempotency_key=caller.idempotency_key, body_hash=body_hash(body), scope=caller.scope,
            override=caller.mass_delete_reason),
            check=lambda: self._check_mass_delete(snapshot, cluster=cluster, store_id=store_id, caller=caller))
        self._generation += 1
        self._snapshot = Snapshot(snapshot.git, after, snapshot.git_sha, _with_text(snapshot.texts, path, None))
        return request

    def _check_mass_delete(self, snapshot: Snapshot, *, cluster: str, store_id: str, caller: Caller) -> None:
        """Refuse (409) a deletion past the share of a cluster's stores removed within the window, unless the
        caller states a reason, which is logged and kept with the request."""
        since = self.clock() - self.mass_delete_window
        removed = self.queue.deletions(cluster=cluster, since=since)
        remaining = sum(1 for held in snapshot.git.stores.values()
                        if held.entry is not None and held.entry.store.cluster == cluster)
        # The fleet as it was when the window began: what is left plus what was removed since.
        limit = max(1, int(self.mass_delete_share * (remaining + removed)))
        if removed + 1 <= limit:
            return
        what = (f"{removed} stores of cluster {cluster!r} were removed in the last "
                f"{self.mass_delete_window:g} s (limit {limit})")
        if not caller.mass_delete_reason:
            raise Conflict(f"{what}; removing {store_id!r} too needs a stated reason in "
                           f"X-Storeops-Mass-Delete-Reason, or wait until the window has passed")
        log.warning("mass delete beyond the limit by %s: %s; removing %s; reason: %s", caller.client, what,
                    store_id, caller.mass_delete_reason)

    # --- reading ----------------------------------------------------------------------------------

    @property
    def views_key(self) -> tuple[int, int]:
        """Changes whenever a store's view may have: a new snapshot, or a change in the queue."""
        return self._generation, self.queue.version

    def store_views(self) -> dict[str, dict[str, Any]]:
        """Every store's view (see :meth:`store_view`), from one snapshot and one query: what a list shows.

        Kept until the snapshot or the queue changes, so a page of a large fleet is not rebuilt per request.
        """
        key = self.views_key  # read before the snapshot: a race leaves a newer view under an older key
        snapshot = self.snapshot()
        cached = self._views
        if cached is not None and cached[0] == key:
            return cached[1]
        active: dict[str, list[queueing.Request]] = {}
        for request in self.queue.active():
            active.setdefault(request.store_id, []).append(request)
        views = {}
        for store_id in self.store_ids():
            view = self._view(snapshot, store_id, active.get(store_id, []))
            if view is not None:
                views[store_id] = view
        self._views = (key, views)
        return views

    def store_view(self, store_id: str) -> dict[str, Any] | None:
        """A store as Git has it, with what is queued for it; None when neither knows it."""
        requests = [r for r in self.queue.for_store(store_id) if r.status in queueing.ACTIVE]
        return self._view(self.snapshot(), store_id, requests)

    def _view(self, snapshot: Snapshot, store_id: str, requests: list[queueing.Request]) -> dict[str, Any] | None:
        path = entries.path_for(store_id)
        in_git = snapshot.git.stores.get(path)
        in_overlay = snapshot.overlay.stores.get(path)
        if in_git is None and in_overlay is None and not requests:
            return None
        entry = (in_overlay or in_git)
        data = entry.entry.doc.data if entry and entry.entry else None
        if requests:
            last = requests[-1]
            status = "deleting" if last.action == queueing.DELETE else last.status
        else:
            status = "committed"
        return {"id": store_id, "status": status, "in_git": in_git is not None, "entry": data,
                "requests": [r.id for r in requests]}

    def owner_of(self, store_id: str) -> str | None:
        """The owner email of a store as the queue or Git has it; None when neither knows it."""
        snapshot = self.snapshot()
        path = entries.path_for(store_id)
        held = snapshot.overlay.stores.get(path) or snapshot.git.stores.get(path)
        return held.entry.store.owner.email if held is not None and held.entry is not None else None

    def store_ids(self) -> list[str]:
        snapshot = self.snapshot()
        ids = snapshot.git.store_ids() | snapshot.overlay.store_ids()
        ids |= {r.store_id for r in self.queue.active()}
        return sorted(ids)


def _refuse_new_problems(before: fleet.Fleet, after: fleet.Fleet, path: str, *, taken: str,
                         ignore: str | None = None) -> None:
    """Raise 409 when the change takes an id or host someone has, 422 for any other new problem."""
    new = [p for p in fleet.change_problems(before, after) if p.code != ignore]
    conflicts = [_from_request_side(p, path) for p in new if p.code in errors.TAKEN]
    if conflicts:
        raise Conflict(taken, conflicts)
    if new:
        raise Invalid(f"{len(new)} problem{'s' if len(new) != 1 else ''} in the request", new)


def _set_text(texts: dict[str, str], path: str, content: str | None) -> None:
    if content is None:
        texts.pop(path, None)
    else:
        texts[path] = content


def _with_text(texts: Mapping[str, str], path: str, content: str | None) -> dict[str, str]:
    out = dict(texts)
    _set_text(out, path, content)
    return out


def _from_request_side(problem: Problem, path: str) -> Problem:
    """A "taken" problem told from the request's side: the rule may pin it on the other entry."""
    if problem.path == path:
        return problem
    head, _, _ = problem.message.rpartition(" by ")
    return Problem(path, 0, problem.field, f"{head} by {problem.path}", problem.code)


def store_id_of(path: str) -> str:
    return path.removeprefix(constants.STORES_DIR + "/").removesuffix(constants.ENTRY_SUFFIX)
