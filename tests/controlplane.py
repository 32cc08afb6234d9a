"""pytest plugin: a real Kubernetes control plane and Argo CD for integration and e2e tests.

Register it with ``pytest_plugins = ["tests.controlplane"]`` in tests/conftest.py.

Fixtures (session-scoped; each starts its own processes in its own state folder and stops only
those, by pid):

* ``kube_apiserver`` - etcd + kube-apiserver (client-cert authn, RBAC, watch cache off). Yields a
  :class:`harness.stack.Stack`: ``.kubeconfig`` (admin kubeconfig path), ``.url``, ``.api`` (stdlib
  HTTPS client with ``request()`` and ``watch()``), ``.kubectl`` (``run()``, ``apply()``, ``get()``,
  ``wait_for()``), ``.restart_apiserver()``, ``.compact_etcd()`` (returns the compacted revision;
  older resourceVersions then give 410 Gone), ``.logs()``.
* ``argocd_stack`` - the full stack: also controller-manager, scheduler, kwok with one untainted
  simulated node, Redis, the Argo CD CRDs and config, application-controller and repo-server.
  Same object, plus ``.namespace`` (``argocd``), ``.helm``, ``.application(name)``,
  ``.wait_application(name, sync=, health=)`` and ``.wait_gone(kind, name, namespace=)``.
* ``node_stack`` - module-scoped: etcd, kube-apiserver, controller-manager, scheduler and a real
  node (harness/node.py: containerd, kubelet, kube-proxy, a bridge pod network closed to the
  outside) where Pods really run. Same object, plus ``.node`` (``.images["busybox"]``: a local test
  image with httpd/wget/nc/sh). Skips, naming the reason, on a machine that cannot run containers.
* ``argocd_node_stack`` - module-scoped: the full stack (``argocd_stack``'s parts) with the real
  node beside kwok's. The simulated node is tainted there, so store Pods run on the real node, from
  the local images the cluster profile ``local`` names. Skips like ``node_stack``.
* ``git_daemon`` - ``git daemon`` on 127.0.0.1 serving (fetch and push) every repository under
  ``.base_path``; ``.url(name)`` is ``git://127.0.0.1:<port>/<name>``. Needs only git.

When the binaries are not built the fixtures fail with a message naming ``bash harness/build.sh``;
with ``STOREOPS_SKIP_CONTROLPLANE=1`` they skip instead. When a test using them fails, the last
lines of every component's log are added to its report.
"""

from __future__ import annotations

import collections.abc
import logging
import os

import pytest

from harness import errors, gitserver, node, stack, versions

__all__ = ["SKIP_VARIABLE", "argocd_node_stack", "argocd_stack", "git_daemon", "kube_apiserver", "node_stack"]

logger = logging.getLogger(__name__)

SKIP_VARIABLE = "STOREOPS_SKIP_CONTROLPLANE"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: needs the full control plane with Argo CD (argocd_stack)")
    config.addinivalue_line("markers", "controlplane: needs the real kube-apiserver (kube_apiserver)")
    config.addinivalue_line("markers", "node: needs the real node where Pods run (node_stack, argocd_node_stack)")


def _binaries() -> versions.Binaries:
    if os.environ.get(SKIP_VARIABLE) == "1":
        pytest.skip(f"{SKIP_VARIABLE}=1: control-plane tests skipped")
    try:
        return versions.locate()
    except errors.MissingBinariesError as e:
        pytest.fail(str(e), pytrace=False)


def _run(
    tmp_path_factory: pytest.TempPathFactory, name: str, *, full: bool, with_node: bool = False
) -> collections.abc.Iterator[stack.Stack]:
    binaries = _binaries()
    if with_node:
        problems = node.host_problems()
        if problems:
            pytest.skip("this machine cannot run the harness node: " + "; ".join(problems))
        try:
            versions.locate_node()
            versions.locate_csi()
        except errors.MissingBinariesError as e:
            pytest.fail(str(e), pytrace=False)
    try:
        running = stack.start(
            tmp_path_factory.mktemp(name), full=full, binaries=binaries, tie_to_parent=True, node=with_node
        )
    except errors.HarnessError as e:
        pytest.fail(f"{name} did not start: {e}", pytrace=False)
    logger.info("%s ready in %.1fs (kubeconfig %s)", name, running.started_seconds, running.kubeconfig)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def kube_apiserver(tmp_path_factory: pytest.TempPathFactory) -> collections.abc.Iterator[stack.Stack]:
    """etcd + kube-apiserver on 127.0.0.1 (see the module docstring for the yielded object)."""
    yield from _run(tmp_path_factory, "kube-apiserver", full=False)


@pytest.fixture(scope="session")
def argocd_stack(tmp_path_factory: pytest.TempPathFactory) -> collections.abc.Iterator[stack.Stack]:
    """The full control plane with Argo CD (see the module docstring for the yielded object)."""
    yield from _run(tmp_path_factory, "argocd-stack", full=True)


@pytest.fixture(scope="module")
def node_stack(tmp_path_factory: pytest.TempPathFactory) -> collections.abc.Iterator[stack.Stack]:
    """A control plane with a real node where Pods run (module-scoped: its Pods and network go after)."""
    yield from _run(tmp_path_factory, "node-stack", full=False, with_node=True)


@pytest.fixture(scope="module")
def argocd_node_stack(tmp_path_factory: pytest.TempPathFactory) -> collections.abc.Iterator[stack.Stack]:
    """The full control plane with Argo CD and a real node (module-scoped: one node per machine)."""
    yield from _run(tmp_path_factory, "argocd-node-stack", full=True, with_node=True)


@pytest.fixture(scope="session")
def git_daemon(tmp_path_factory: pytest.TempPathFactory) -> collections.abc.Iterator[gitserver.GitDaemon]:
    """A git:// server on 127.0.0.1 for repositories created under its ``base_path``."""
    root = tmp_path_factory.mktemp("git-daemon")
    try:
        daemon = gitserver.start(root / "repos", log_dir=root / "logs", tie_to_parent=True)
    except errors.HarnessError as e:
        pytest.fail(f"git daemon did not start: {e}", pytrace=False)
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> collections.abc.Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        for name, value in getattr(item, "funcargs", {}).items():
            if isinstance(value, stack.Stack):
                report.sections.append((f"control-plane logs ({name})", value.logs()))
    return report
