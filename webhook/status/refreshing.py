"""Ask Argo CD to look at Git now, instead of at its next poll (about 3 minutes by default).

After a publish the cluster's root Application must refresh (it creates and updates the store
Applications) and so must each changed store's Application (its values file changed, not
necessarily its spec). Setting the ``argocd.argoproj.io/refresh`` annotation does that; Argo CD
removes it once it refreshed. The reader's Role allows ``patch`` on Applications for this alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kubernetes import client

from generator import constants
from generator.publishing import Published
from webhook.errors import RefreshError
from webhook.status.watching import GROUP, PLURAL, VERSION

__all__ = ["affected_stores", "refresh", "refresh_published", "terminate_failing_sync"]

log = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
HTTP_NOT_FOUND = 404


def affected_stores(published: Published) -> list[str]:
    """Stores whose Application a publish changed or created (removed ones are pruned by the root app)."""
    return sorted(set(published.changes.added) | set(published.changes.changed))


def refresh(api: client.ApiClient, *, namespace: str, names: Iterable[str], root_selector: str = "",
            mode: str = "normal") -> list[str]:
    """Annotate the named Applications (and those matching ``root_selector``) for refresh; returns those patched.

    An Application that does not exist yet is skipped: the root app creates it from the new revision.
    """
    custom = client.CustomObjectsApi(api)
    targets = list(dict.fromkeys(names))
    if root_selector:
        try:
            roots: Any = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                                              label_selector=root_selector)
        except client.ApiException as e:
            raise RefreshError(f"cannot list root Applications ({root_selector}) in {namespace}: {e.reason}") from e
        targets = [str(app["metadata"]["name"]) for app in roots.get("items") or []] + targets
    body = {"metadata": {"annotations": {constants.ANNOTATION_REFRESH: mode}}}
    patched: list[str] = []
    for name in targets:
        try:
            custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, body,
                                                  _content_type=MERGE_PATCH)
        except client.ApiException as e:
            if e.status == HTTP_NOT_FOUND:
                log.info("Application %s/%s: not there yet, nothing to refresh", namespace, name)
                continue
            raise RefreshError(f"cannot ask Argo CD to refresh {namespace}/{name}: {e.status} {e.reason}") from e
        patched.append(name)
    log.info("asked Argo CD to refresh %d Application(s) in %s: %s", len(patched), namespace, ", ".join(patched[:20]))
    return patched


def refresh_published(api: client.ApiClient, published: Published, *, namespace: str, root_selector: str) -> list[str]:
    """Refresh what ``published`` touched; does nothing when it pushed nothing."""
    if not published.committed:
        return []
    names = [f"{constants.NAMESPACE_PREFIX}{store_id}" for store_id in affected_stores(published)]
    return refresh(api, namespace=namespace, names=names, root_selector=root_selector)


def terminate_failing_sync(api: client.ApiClient, *, namespace: str, store_id: str) -> bool:
    """Stop the store Application's running sync when it is one Argo CD keeps retrying after a failure (what
    ``argocd app terminate-op`` does: the operation's phase set to ``Terminating``); whether it did.

    A rollback commits the entry that worked; Argo CD syncs a new revision only once the running operation
    ends, and a failing sync with retries can run for minutes (its backoff) before it gives up."""
    name = f"{constants.NAMESPACE_PREFIX}{store_id}"
    app = _terminate_when(api, namespace, name, retrying_sync)
    if app is None:
        return False
    state = (app.get("status") or {}).get("operationState") or {}
    log.info("stopped %s's failing sync (retry %s): a rollback is coming", name, state.get("retryCount"))
    return True


#: The fields of an Application's source that say what a sync renders.
SOURCE_FIELDS = ("repoURL", "path", "chart", "targetRevision")


def stale_retrying_sync(app: Mapping[str, Any]) -> bool:
    """Whether the Application's running sync is one Argo CD keeps retrying after a failure for a source its
    spec no longer has. An automated sync takes the spec's source when it starts; when a commit moves the
    store's chart (a rollback, a release) Argo CD may see the new revision before the root Application has
    updated the store's spec, start on the old chart at the new revision, and retry that for minutes."""
    if not retrying_sync(app):
        return False
    state = (app.get("status") or {}).get("operationState") or {}
    running = ((state.get("operation") or {}).get("sync") or {}).get("source")
    wanted = (app.get("spec") or {}).get("source")
    if not isinstance(running, Mapping) or not isinstance(wanted, Mapping):
        return False
    return any(running.get(k) != wanted.get(k) for k in SOURCE_FIELDS)


def terminate_stale_sync(api: client.ApiClient, *, namespace: str, name: str) -> bool:
    """Stop the Application's running sync if it is a stale retrying one (:func:`stale_retrying_sync`, read
    again here); Argo CD's automated sync then starts over with the spec's source. Whether it did."""
    app = _terminate_when(api, namespace, name, stale_retrying_sync)
    if app is None:
        return False
    state = (app.get("status") or {}).get("operationState") or {}
    source = ((state.get("operation") or {}).get("sync") or {}).get("source") or {}
    log.info("stopped %s's failing sync of %s (started %s, retry %s): its spec now says %s", name, source.get("path"),
             state.get("startedAt"), state.get("retryCount"), ((app.get("spec") or {}).get("source") or {}).get("path"))
    return True


def retrying_sync(app: Mapping[str, Any]) -> bool:
    """Whether the Application's running sync is one Argo CD retries after a failure."""
    state = (app.get("status") or {}).get("operationState") or {}
    return state.get("phase") == "Running" and bool(state.get("retryCount"))


def _terminate_when(api: client.ApiClient, namespace: str, name: str,
                    check: Callable[[Mapping[str, Any]], bool]) -> Mapping[str, Any] | None:
    """Read the Application; if ``check`` says so, set its operation's phase to ``Terminating`` (what ``argocd
    app terminate-op`` does) and return what was read; None when it is gone or ``check`` says no."""
    custom = client.CustomObjectsApi(api)
    try:
        app: Any = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except client.ApiException as e:
        if e.status == HTTP_NOT_FOUND:
            return None
        raise RefreshError(f"cannot read {namespace}/{name}: {e.status} {e.reason}") from e
    if not check(app):
        return None
    try:
        custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name,
                                              {"status": {"operationState": {"phase": "Terminating"}}},
                                              _content_type=MERGE_PATCH)
    except client.ApiException as e:
        raise RefreshError(f"cannot stop the running sync of {namespace}/{name}: {e.status} {e.reason}") from e
    return dict(app)
