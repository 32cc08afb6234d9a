"""One list + watch over the store Applications: what the status reader knows about Argo CD comes from here.

The loop (after kopf and client-go's reflector): list every selected Application in pages, hand
each to the consumer, then watch from the list's resourceVersion with bookmarks. A watch ends
by itself after ``watch_timeout`` seconds and is re-made from the last resourceVersion seen; a
watch that stays silent past the client-side read timeout is dropped and re-made the same way.
``410 Gone`` (the resourceVersion was compacted away) means events were lost: list again, and
the consumer learns from :meth:`Consumer.listed` which objects vanished meanwhile. Other errors
(API server restarting, connection refused) are retried with capped exponential backoff.

In steady state this is one long request per ``watch_timeout`` for the whole fleet, whatever its size.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes import client, watch

from webhook.errors import WatchError
from webhook.metrics import Metrics

__all__ = ["GROUP", "PLURAL", "VERSION", "Consumer", "Gone", "Watcher"]

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "argoproj.io", "v1alpha1", "applications"
HTTP_GONE = 410


class Gone(WatchError):
    """The resourceVersion the watch (or list page) started from is no longer in etcd."""


class Consumer(Protocol):
    def upsert(self, obj: Mapping[str, Any]) -> None:
        """An object was listed, added or modified."""

    def delete(self, obj: Mapping[str, Any]) -> None:
        """An object was deleted (its last state)."""

    def listed(self, names: set[str]) -> None:
        """A full list finished: objects not named here are gone."""


class _RawWatch(watch.Watch):
    """The client's watch, handing events over as the parsed JSON (custom objects have no model)."""

    def get_return_type(self, func: Any) -> None:
        return None


@dataclass
class Watcher:
    """Lists and watches ``namespace``'s Applications matching ``selector`` until ``run``'s stop is set."""

    api: client.ApiClient
    consumer: Consumer
    namespace: str
    selector: str
    metrics: Metrics
    watch_timeout: int = 300
    read_timeout: float = 330.0
    page_size: int = 500
    backoff_min: float = 0.5
    backoff_max: float = 30.0
    connect_timeout: float = 10.0

    def __post_init__(self) -> None:
        self._custom = client.CustomObjectsApi(self.api)
        self._current: Any = None
        self._lock = threading.Lock()
        #: The resourceVersion the next watch starts from ('' before the first list and after a 410).
        self.resource_version = ""

    def run(self, *, stop: threading.Event) -> None:
        """List and watch until ``stop`` is set; never raises for API trouble (it retries)."""
        interrupter = threading.Thread(target=self._interrupt_on, args=(stop,), name="watch-stop", daemon=True)
        interrupter.start()
        failures = 0
        while not stop.is_set():
            try:
                if not self.resource_version:
                    self.resource_version = self.list_all()
                self.resource_version = self.watch_once(self.resource_version, stop=stop)
                failures = 0
            except Gone as e:
                log.warning("namespace %s: %s; listing again", self.namespace, e)
                self.metrics.count("storeops_status_watch_restarts_total", reason="gone")
                self.resource_version = ""
            except Exception as e:  # the API server restarting, a dropped or silent connection, ...
                if stop.is_set():
                    break
                failures += 1
                delay = min(self.backoff_max, self.backoff_min * 2 ** (failures - 1)) * random.uniform(0.5, 1.0)
                reason = type(e).__name__
                log.warning("namespace %s: watch from resourceVersion %s failed (%s: %s); retry %d in %.2fs",
                            self.namespace, self.resource_version or "-", reason, _short(e), failures, delay)
                self.metrics.count("storeops_status_watch_restarts_total", reason="error")
                stop.wait(delay)
        log.info("namespace %s: watch stopped at resourceVersion %s", self.namespace, self.resource_version or "-")

    def list_all(self) -> str:
        """List every selected Application in pages, hand each to the consumer; returns the list's resourceVersion."""
        names: set[str] = set()
        token: str | None = None
        resource_version = ""
        while True:
            try:
                response = self._custom.list_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, PLURAL, label_selector=self.selector, limit=self.page_size,
                    _continue=token, _preload_content=False,
                    _request_timeout=(self.connect_timeout, self.read_timeout))
            except client.ApiException as e:
                if e.status == HTTP_GONE:
                    raise Gone(f"list page expired: {e.reason}") from e
                raise
            page = json.loads(typing.cast(Any, response).data)
            if not str(page.get("kind", "")).endswith("List"):
                # Never read an answer without a list as "no Applications": that would report a fleet deleted.
                raise WatchError(f"list of {self.namespace}: not a list answer ({page.get('kind', '?')})")
            for obj in page.get("items") or []:
                names.add(str(obj["metadata"]["name"]))
                self.consumer.upsert(obj)
            metadata = page.get("metadata") or {}
            resource_version = str(metadata.get("resourceVersion") or resource_version)
            token = metadata.get("continue") or None
            if not token:
                break
        self.consumer.listed(names)
        self.metrics.count("storeops_status_relists_total")
        log.info("namespace %s: listed %d Applications (%s) at resourceVersion %s", self.namespace, len(names),
                 self.selector, resource_version)
        return resource_version

    def watch_once(self, resource_version: str, *, stop: threading.Event) -> str:
        """One watch request from ``resource_version``; returns the last resourceVersion seen."""
        stream: Any = _RawWatch()  # type: ignore[no-untyped-call]
        with self._lock:
            self._current = stream
        if stop.is_set():
            return resource_version
        try:
            events = stream.stream(
                self._custom.list_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL,
                label_selector=self.selector, resource_version=resource_version, allow_watch_bookmarks=True,
                timeout_seconds=self.watch_timeout, _request_timeout=(self.connect_timeout, self.read_timeout))
            for event in events:
                kind, obj = event["type"], event["raw_object"]
                if kind == "ERROR":
                    code = obj.get("code")
                    if code == HTTP_GONE:
                        raise Gone(f"watch from {resource_version}: {obj.get('message', '')}")
                    raise WatchError(f"watch error {code}: {obj.get('message', '')}")
                if kind == "ADDED" or kind == "MODIFIED":
                    self.consumer.upsert(obj)
                elif kind == "DELETED":
                    self.consumer.delete(obj)
                # Kept on the object at once: a watch that breaks after this event resumes after it.
                resource_version = self.resource_version = str(obj["metadata"]["resourceVersion"])
                if stop.is_set():
                    break
        except client.ApiException as e:
            if e.status == HTTP_GONE:
                raise Gone(f"watch from {resource_version}: {e.reason}") from e
            if stop.is_set():
                return resource_version
            raise
        except Exception:
            if stop.is_set():
                return resource_version  # our own interrupt closed the connection
            raise
        finally:
            with self._lock:
                self._current = None
        return resource_version

    def _interrupt_on(self, stop: threading.Event) -> None:
        stop.wait()
        with self._lock:
            current = self._current
        if current is not None:
            current.stop()


def _short(error: Exception) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= 200 else text[:200] + "..."
