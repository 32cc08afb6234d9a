"""The status reader: the watch, the lifecycle mapping and the reporting, put together.

:class:`Fleet` is what the watch feeds: it keeps a trimmed copy of each store Application (only
the fields the mapping reads, so 10,000 stores stay small), assesses every change and hands the
result to the :class:`~webhook.reporting.Reporter`. A ticker re-assesses stores on their way from
memory, so "Progressing for too long" becomes ``stuck`` without a request. :class:`StatusReader`
owns the threads: the watch, the ticker and the deliverer, all ended by one stop event.
"""

from __future__ import annotations

import datetime
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
from kubernetes import client, config

from generator import constants
from generator.publishing import Published
from webhook.errors import RefreshError
from webhook.metrics import STATUS, Labels, Metrics
from webhook.settings import StatusSettings
from webhook.status import lifecycle, refreshing
from webhook.status.callbacks import CallbackSink
from webhook.status.ledger import Ledger, Row
from webhook.status.reporting import Deliverer, Reporter
from webhook.status.revisions import Revisions
from webhook.status.sinks import MetricsSink, Sink, WakeSink
from webhook.status.watching import Watcher

__all__ = ["Fleet", "StatusReader", "api_client", "begin", "build", "launch", "row_view", "shutdown", "trim"]

log = logging.getLogger(__name__)

Clock = Callable[[], datetime.datetime]


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def api_client(settings: StatusSettings) -> client.ApiClient:
    """A Kubernetes API client from ``STOREOPS_KUBECONFIG``, else from the Pod's service account."""
    configuration = client.Configuration()
    if settings.kubeconfig:
        config.load_kube_config(config_file=settings.kubeconfig,  # type: ignore[no-untyped-call]
                                client_configuration=configuration)
    else:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return client.ApiClient(configuration)


def trim(app: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of an Application the lifecycle mapping reads; the rest (most of spec, resources, history) is
    dropped."""
    metadata = app.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    status = app.get("status") or {}
    health = status.get("health") or {}
    operation = status.get("operationState") or {}
    kept_annotations = {k: annotations[k] for k in (constants.ANNOTATION_URL, constants.ANNOTATION_CALLBACK_URL)
                        if k in annotations}
    labels = metadata.get("labels") or {}
    kept_labels = {k: labels[k] for k in (constants.LABEL_STORE, constants.LABEL_CLUSTER) if k in labels}
    sync = status.get("sync") or {}
    compared = ((sync.get("comparedTo") or {}).get("source") or {}).get("path")
    return {
        "metadata": {"name": metadata.get("name"), "deletionTimestamp": metadata.get("deletionTimestamp"),
                     "labels": kept_labels, "annotations": kept_annotations},
        # The chart path: which Application Argo CD compares (see Revisions.source_path).
        "spec": {"source": {"path": ((app.get("spec") or {}).get("source") or {}).get("path")}},
        "status": {
            "sync": {"status": sync.get("status"), "revision": sync.get("revision"),
                     **({"comparedTo": {"source": {"path": compared}}} if compared else {})},
            "health": {"status": health.get("status"), "message": health.get("message"),
                       "lastTransitionTime": health.get("lastTransitionTime")},
            "operationState": {"phase": operation.get("phase"), "message": operation.get("message"),
                               "retryCount": operation.get("retryCount"),
                               "syncResult": {"revision": (operation.get("syncResult") or {}).get("revision"),
                                              "resources": [_trim_resource(r)
                                                            for r in lifecycle.failed_resources(operation)]}}
            if operation else {},
            "conditions": [{"type": c.get("type"), "message": c.get("message")}
                           for c in status.get("conditions") or []],
        },
    }


def _trim_resource(resource: Mapping[str, Any]) -> dict[str, Any]:
    return {k: resource.get(k) for k in ("kind", "namespace", "name", "status", "hookPhase", "message")}


#: Gives the reason a failed hook Job's Pod left (its termination message): ``(namespace, job) -> reason``.
Explain = Callable[[str, str], str]


def job_reason(api: client.ApiClient, namespace: str, job: str) -> str:
    """The termination message of the newest failed Pod of Job ``job`` ('' when there is none or the
    Pods cannot be read). One read, made when a store's sync attempt has a failed hook Job."""
    try:
        pods = client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=f"job-name={job}",
                                                         _request_timeout=10)
    except Exception as e:  # the reason is a detail: the state is reported without it
        log.info("cannot read the Pods of Job %s/%s for its failure reason: %s", namespace, job, e)
        return ""
    messages = []
    for pod in pods.items:
        for status in (pod.status.container_statuses or []) if pod.status else []:
            terminated = status.state.terminated if status.state else None
            if terminated is not None and terminated.exit_code and terminated.message:
                messages.append((pod.metadata.creation_timestamp if pod.metadata else None, terminated.message))
    if not messages:
        return ""
    newest = max(messages, key=lambda m: (m[0] is not None, m[0]))[1]
    lines = [line.strip() for line in str(newest).splitlines() if line.strip()]
    return lines[-1][:500] if lines else ""


@dataclass
class Fleet:
    """Every store Application the watch has shown, assessed on each change (a watch Consumer)."""

    reporter: Reporter
    revisions: Revisions
    stuck_after: float
    clock: Clock = utcnow
    apps: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Reads a failed hook Job's reason; None: the Application's own messages only.
    explain: Explain | None = None
    #: Stops an Application's stale retrying sync (refreshing.stale_retrying_sync), by name; None: left alone.
    unstick: Callable[[str], object] | None = None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._progressing: dict[str, datetime.datetime] = {}
        self._reasons: dict[tuple[str, str, str, str], str] = {}
        self._unstuck: set[tuple[str, str]] = set()

    def upsert(self, obj: Mapping[str, Any]) -> None:
        store_id = lifecycle.application_store_id(obj)
        app = trim(obj)
        self._explain(app, obj)
        self._unstick(obj)
        with self._lock:
            self.apps[store_id] = app
            self._assess(store_id)

    def _explain(self, app: dict[str, Any], obj: Mapping[str, Any]) -> None:
        """Add to each failed hook Job of the last attempt the reason its Pod gave, read once per attempt."""
        if self.explain is None:
            return
        operation = (obj.get("status") or {}).get("operationState") or {}
        started = str(operation.get("startedAt") or "")
        for resource in app["status"]["operationState"].get("syncResult", {}).get("resources", []):
            if resource.get("kind") != "Job" or resource.get("hookPhase") not in lifecycle.FAILED_RESOURCE_PHASES:
                continue
            namespace, name = str(resource.get("namespace") or ""), str(resource.get("name") or "")
            key = (namespace, name, started, str(resource.get("message") or ""))
            if key not in self._reasons:
                self._reasons[key] = self.explain(namespace, name) if namespace and name else ""
            if self._reasons[key]:
                resource["reason"] = self._reasons[key]

    def _unstick(self, obj: Mapping[str, Any]) -> None:
        """Stop a sync Argo CD retries for a chart the store's spec no longer names, once per operation."""
        if self.unstick is None or not refreshing.stale_retrying_sync(obj):
            return
        name = str((obj.get("metadata") or {}).get("name") or "")
        started = str(((obj.get("status") or {}).get("operationState") or {}).get("startedAt") or "")
        if (name, started) in self._unstuck:
            return
        self._unstuck.add((name, started))
        try:
            self.unstick(name)
        except RefreshError as e:
            log.warning("%s", e)

    def delete(self, obj: Mapping[str, Any]) -> None:
        store_id = lifecycle.application_store_id(obj)
        with self._lock:
            self.apps.pop(store_id, None)
            self._assess(store_id)

    def listed(self, names: set[str]) -> None:
        """After a full list: stores we knew (in memory or reported) whose Application is not listed are gone."""
        with self._lock:
            present = {store_id for store_id, app in self.apps.items() if app["metadata"]["name"] in names}
            known = set(self.apps) | {store_id for store_id, row in self.reporter.rows().items()
                                      if row.state != lifecycle.DELETED}
            for store_id in sorted(known - present):
                self.apps.pop(store_id, None)
                self._assess(store_id)

    def tick(self) -> None:
        """Re-assess stores still on their way (time alone can make them ``stuck``)."""
        with self._lock:
            for store_id in list(self._progressing):
                self._assess(store_id)

    def assessment(self, store_id: str) -> lifecycle.Assessment:
        with self._lock:
            return self._assessment(store_id, self.clock())

    def _assessment(self, store_id: str, now: datetime.datetime) -> lifecycle.Assessment:
        app = self.apps.get(store_id)
        change = self.reporter.change(store_id)
        health = ((app or {}).get("status") or {}).get("health") or {}
        if health.get("status") == "Progressing":
            self._progressing.setdefault(store_id, now)
        else:
            self._progressing.pop(store_id, None)
        return lifecycle.assess(
            app, store_id=store_id, now=now, stuck_after=self.stuck_after,
            contains=(lambda revision: self._at_change(app, store_id, revision, change)) if change else None,
            seen_since=self._progressing.get(store_id))

    def _at_change(self, app: dict[str, Any] | None, store_id: str, revision: str, change: str) -> bool:
        """Whether Argo CD's revision holds the change, and it compared the Application the change renders."""
        if not self.revisions.contains(revision, change):
            return False
        labels = ((app or {}).get("metadata") or {}).get("labels") or {}
        wanted = self.revisions.source_path(change, str(labels.get(constants.LABEL_CLUSTER) or ""), store_id)
        if wanted is None:
            return True
        spec = (((app or {}).get("spec") or {}).get("source") or {}).get("path")
        compared = ((((app or {}).get("status") or {}).get("sync") or {}).get("comparedTo") or {}).get(
            "source") or {}
        return spec == wanted and compared.get("path", spec) == wanted

    def _assess(self, store_id: str) -> None:
        now = self.clock()
        self.reporter.observe(self._assessment(store_id, now), now=now)


@dataclass
class StatusReader:
    """The reader's parts and threads; ``start`` runs them until ``stop`` is set."""

    settings: StatusSettings
    api: client.ApiClient
    ledger: Ledger
    metrics: Metrics
    reporter: Reporter
    fleet: Fleet
    watcher: Watcher
    deliverer: Deliverer
    threads: list[threading.Thread] = field(default_factory=list)
    #: Set when the reader is told to stop (SSE streams end then).
    stopped: threading.Event = field(default_factory=threading.Event)

    def start(self, *, stop: threading.Event) -> None:
        """Start the watch, ticker and deliverer threads (daemon threads, joined by ``join``)."""
        self.stopped = stop
        for name, target in (("status-watch", lambda: self.watcher.run(stop=stop)),
                             ("status-tick", lambda: self._tick(stop)),
                             ("status-deliver", lambda: self.deliverer.run(stop=stop))):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self.threads.append(thread)
        threading.Thread(target=self._wake_on_stop, args=(stop,), name="status-stop", daemon=True).start()

    def _wake_on_stop(self, stop: threading.Event) -> None:
        stop.wait()
        self.deliverer.wake.set()

    def join(self, timeout: float = 10.0) -> None:
        for thread in self.threads:
            thread.join(timeout)

    def close(self) -> None:
        for sink in self.reporter.sinks:
            close = getattr(sink, "close", None)
            if close is not None:
                close()
        self.ledger.close()
        self.api.close()  # type: ignore[no-untyped-call]

    def reload(self) -> None:
        """Take up what the ledger holds now: a replica that does not lead answers from what the leader records,
        and one that becomes the leader starts from it (so it repeats no transition already reported)."""
        self.reporter.reload()

    # --- what the rest of the service asks (webhook.types.StatusView) ---------------------------

    def store_status(self, store_id: str) -> dict[str, object] | None:
        """The store's last reported state, for the API; None when the reader has never seen the store."""
        row = self.reporter.row(store_id)
        return None if row is None else row_view(row)

    def fleet_status(self) -> dict[str, object]:
        rows = self.reporter.rows()
        return {"counts": self.reporter.states(), "stores": [row_view(rows[k]) for k in sorted(rows)]}

    @property
    def seq(self) -> int:
        return self.reporter.seq

    def transitions(self, store_id: str) -> list[dict[str, object]]:
        return [event.as_dict() for event in self.ledger.events(store_id=store_id, limit=10_000)]

    def metrics_text(self) -> str:
        """The reader's metrics in Prometheus text, to append to ``/metrics``."""
        states: dict[Labels, float] = {(("state", state),): float(count)
                                       for state, count in self.reporter.states().items()}
        return self.metrics.render(gauges={"storeops_stores": states,
                                           "storeops_status_outbox": {(): float(self.ledger.pending())}})

    def note_published(self, published: Published) -> list[str]:
        """After a publish: ready now waits for ``published.sha``, and Argo CD is asked to refresh at once."""
        if not published.committed:
            return []
        stores = refreshing.affected_stores(published)
        self.reporter.expect(stores, published.sha, now=utcnow())
        return refreshing.refresh_published(self.api, published, namespace=self.settings.namespace,
                                            root_selector=self.settings.root_selector)

    def stop_failing_sync(self, store_id: str) -> bool:
        """Before a rollback lands: stop the store's sync that Argo CD keeps retrying (``refreshing``)."""
        return refreshing.terminate_failing_sync(self.api, namespace=self.settings.namespace, store_id=store_id)

    def _tick(self, stop: threading.Event) -> None:
        while not stop.wait(self.settings.tick):
            try:
                self.fleet.tick()
            except Exception:
                log.exception("re-assessing stores on their way failed; next tick in %.1fs", self.settings.tick)


def row_view(row: Row) -> dict[str, object]:
    return {"store_id": row.store_id, "status": row.state, "message": row.message,
            "error": row.message if row.state in (lifecycle.FAILED, lifecycle.DEGRADED, lifecycle.STUCK) else None,
            "url": row.url if row.state == lifecycle.READY and row.url else None,
            "revision": row.revision or None, "change": row.change or None,
            "since": row.since.isoformat(timespec="milliseconds").replace("+00:00", "Z")}


def launch(settings: StatusSettings | None, *, sinks: Sequence[Sink] | None = None,
           start: bool = True) -> StatusReader | None:
    """Build the reader when a cluster is configured, and start it unless told not to (a replica that does not
    lead keeps it built, to answer from the ledger, and starts it with :func:`begin` when it leads); None (the
    service runs without it) when no cluster is configured."""
    if settings is None or not settings.enabled:
        log.info("status reader off: no STOREOPS_KUBECONFIG and not in a cluster")
        return None
    reader = build(settings, sinks=sinks)
    if start:
        begin(reader)
    return reader


def begin(reader: StatusReader) -> None:
    """Start the reader's threads (the watch, the ticker, the deliverer of the outbox)."""
    reader.start(stop=threading.Event())
    log.info("status reader watching Applications in %s (%s); reporting to %s", reader.settings.namespace,
             reader.settings.selector, ", ".join(s.name for s in reader.reporter.sinks))


async def shutdown(reader: StatusReader | None) -> None:
    """Stop what :func:`launch` started and wait for its threads (off the event loop)."""
    if reader is None:
        return
    reader.stopped.set()
    await anyio.to_thread.run_sync(reader.join)
    reader.close()


def build(settings: StatusSettings, *, api: client.ApiClient | None = None, sinks: Sequence[Sink] | None = None,
          clock: Clock = utcnow) -> StatusReader:
    """Open the ledger and wire the reader (nothing runs until ``start``).

    ``sinks`` are where transitions go besides the reader's own live ones (metrics, waking the
    deliverer); by default the callback sink alone, from ``settings``.
    """
    api = api or api_client(settings)
    ledger = Ledger(settings.ledger)
    metrics = Metrics(STATUS)
    reported = list(sinks) if sinks is not None else [CallbackSink.from_settings(settings)]
    deliverer = Deliverer(ledger=ledger, metrics=metrics, sinks=[s for s in reported if s.durable],
                          attempts=settings.callback_attempts, retry_min=settings.retry_min,
                          retry_max=settings.retry_max)
    reporter = Reporter(ledger=ledger, metrics=metrics,
                        sinks=[*reported, MetricsSink(metrics), WakeSink(deliverer.wake)])
    fleet = Fleet(reporter=reporter, revisions=Revisions(settings.workdir), stuck_after=settings.stuck_after,
                  clock=clock, explain=lambda namespace, job: job_reason(api, namespace, job),
                  unstick=lambda name: refreshing.terminate_stale_sync(api, namespace=settings.namespace, name=name))
    watcher = Watcher(api=api, consumer=fleet, namespace=settings.namespace, selector=settings.selector,
                      metrics=metrics, watch_timeout=settings.watch_timeout,
                      read_timeout=settings.effective_read_timeout, page_size=settings.page_size,
                      backoff_min=settings.backoff_min, backoff_max=settings.backoff_max)
    return StatusReader(settings=settings, api=api, ledger=ledger, metrics=metrics, reporter=reporter, fleet=fleet,
                        watcher=watcher, deliverer=deliverer)
