"""Leader election over a Kubernetes ``Lease``: several replicas of ``storeops serve``, one writer.

Every replica serves the HTTP API and queues requests into the shared PostgreSQL database; only the
replica holding the Lease (``STOREOPS_LEADER_ELECTION=namespace/name``) runs what must run once: the
Git writer, the status reader and its outbox, the GitHub delivery worker, the rollouts driver and the
backup keeper (``webhook.app`` wires them).

The election is the official client's (``kubernetes.leaderelection``): its ``LeaderElection`` with a
``LeaseLock`` (optimistic concurrency on the Lease's resourceVersion: two candidates writing the
same version, one gets a 409). :class:`Elector` runs it in a thread and adds what the service needs
and the client leaves out:

* the lock talks to the service's own API client (the client's ``LeaseLock`` builds one from the
  process-wide default configuration, which ``STOREOPS_KUBECONFIG`` does not set);
* an error other than the API's (a refused connection, a timeout) counts as a failed attempt: the
  client lets it end its thread, and a leader whose renewing thread has died would go on writing
  with nobody renewing its Lease;
* a stop signal, and on a clean shutdown the Lease is given up (holder cleared), so the next
  replica takes over within one retry period instead of the lease duration.

Losing the Lease ends the process at once (``on_lost``; ``storeops serve`` exits with status 1 and
Kubernetes starts it again, as a follower): a leader that cannot renew must stop writing before
another replica's lease may begin, and exiting is the one way that cannot leave a worker behind. A
write in flight at that moment is safe: pushes never force, and the next leader applies the queue
again, each request exactly once (``webhook.intake.writer``).
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import threading
from collections.abc import Callable

from kubernetes import client
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock import leaselock

from webhook.settings import LeaseSettings

__all__ = ["Elector", "exit_now", "identity"]

log = logging.getLogger(__name__)

#: The status ``storeops serve`` exits with when its leadership is lost.
LOST_EXIT_STATUS = 1


def identity() -> str:
    """This process among the candidates: the host name (the Pod's name in Kubernetes) and the process id."""
    return f"{socket.gethostname()}_{os.getpid()}"


def exit_now() -> None:
    """What a replica does when it lost the Lease: stop everything at once; Kubernetes starts it again."""
    log.critical("leadership lost: exiting now (status %d) so no second writer runs", LOST_EXIT_STATUS)
    logging.shutdown()
    os._exit(LOST_EXIT_STATUS)


class _Stopped(Exception):
    """The elector was told to stop: the election's loops end."""


class _Election(leaderelection.LeaderElection):
    """The client's election, with a stop signal, and any failure of one attempt counted as a failed attempt."""

    def __init__(self, config: electionconfig.Config, *, stopping: threading.Event) -> None:
        super().__init__(config)  # type: ignore[no-untyped-call]
        self.stopping = stopping

    def try_acquire_or_renew(self) -> bool:
        if self.stopping.is_set():
            raise _Stopped
        try:
            return bool(super().try_acquire_or_renew())  # type: ignore[no-untyped-call]
        except Exception as e:
            log.warning("lease %s/%s: attempt failed: %s", self.election_config.lock.namespace,
                        self.election_config.lock.name, e)
            return False


class Elector:
    """Runs the election for the Lease in a daemon thread.

    ``on_started`` is called (in the election's thread) when this process takes the Lease; ``on_lost``
    when it was the leader and could not renew in time, or when the election ended by itself. Neither
    is called after :meth:`stop`.
    """

    def __init__(self, *, api: client.ApiClient, lease: LeaseSettings, holder: str,
                 on_started: Callable[[], None], on_lost: Callable[[], None] = exit_now) -> None:
        self.lease = lease
        self.holder = holder
        self.on_started = on_started
        self.on_lost = on_lost
        self.stopping = threading.Event()
        #: Set while this process holds the Lease.
        self.leading = threading.Event()
        self._client = api
        self._api = client.CoordinationV1Api(api)
        lock = leaselock.LeaseLock(lease.name, lease.namespace, holder)  # type: ignore[no-untyped-call]
        lock.api_instance = self._api
        config = electionconfig.Config(  # type: ignore[no-untyped-call]
            lock, lease.lease_duration, lease.renew_deadline, lease.retry_period, self._started, self._stopped)
        self._election = _Election(config, stopping=self.stopping)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        log.info("candidate %s for lease %s/%s (duration %ds, renew deadline %ds, retry %ds)", self.holder,
                 self.lease.namespace, self.lease.name, self.lease.lease_duration, self.lease.renew_deadline,
                 self.lease.retry_period)
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._election.run()  # type: ignore[no-untyped-call]
        except _Stopped:
            return
        except Exception:
            log.exception("lease %s/%s: the election ended with an error", self.lease.namespace, self.lease.name)
        if not self.stopping.is_set():
            # Renewal failed (on_lost was called then) or the election ended: never a replica without one.
            log.error("lease %s/%s: the election ended; this replica cannot lead again", self.lease.namespace,
                      self.lease.name)
            self._stopped()

    def _started(self) -> None:
        if self.stopping.is_set():
            return
        self.leading.set()
        log.info("%s leads: lease %s/%s taken", self.holder, self.lease.namespace, self.lease.name)
        self.on_started()

    def _stopped(self) -> None:
        was_leading = self.leading.is_set()
        self.leading.clear()
        if self.stopping.is_set():
            return
        log.error("%s lost lease %s/%s%s", self.holder, self.lease.namespace, self.lease.name,
                  "" if was_leading else " (not leading)")
        self.on_lost()

    def stop(self, *, release: bool = True) -> None:
        """End the election; with ``release``, give the Lease up when this process holds it (call this after the
        leader's work has stopped: the next leader may start at once)."""
        was_leading = self.leading.is_set()
        self.stopping.set()
        self.leading.clear()
        if release and was_leading:
            self.release()
        if self._thread is not None:
            self._thread.join(timeout=self.lease.retry_period + 5)

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]

    def release(self) -> bool:
        """Clear the holder of the Lease if it is this process (optimistic: a 409 means someone wrote it since)."""
        for _ in range(3):
            try:
                lease = self._api.read_namespaced_lease(self.lease.name, self.lease.namespace, _request_timeout=5)
                if lease.spec is None or lease.spec.holder_identity != self.holder:
                    return False
                lease.spec.holder_identity = None
                lease.spec.lease_duration_seconds = 1
                lease.spec.renew_time = datetime.datetime.now(datetime.UTC)
                self._api.replace_namespaced_lease(self.lease.name, self.lease.namespace, lease, _request_timeout=5)
            except client.ApiException as e:
                if e.status == 409:
                    continue
                log.warning("lease %s/%s not released (it expires by itself): %s", self.lease.namespace,
                            self.lease.name, e.reason)
                return False
            except Exception as e:
                log.warning("lease %s/%s not released (it expires by itself): %s", self.lease.namespace,
                            self.lease.name, e)
                return False
            log.info("%s released lease %s/%s", self.holder, self.lease.namespace, self.lease.name)
            return True
        return False
