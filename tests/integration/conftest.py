"""Fixtures the status reader's integration tests share: the API server with Argo CD's
Application CRD, a fresh namespace, a client for custom objects, and a callback receiver."""

from __future__ import annotations

import collections.abc

import pytest
from kubernetes import client

from harness import stack as harness_stack
from tests.integration.status import support


@pytest.fixture(scope="module")
def apiserver(kube_apiserver: harness_stack.Stack) -> harness_stack.Stack:
    support.install_application_crd(kube_apiserver)
    return kube_apiserver


@pytest.fixture
def namespace(apiserver: harness_stack.Stack) -> str:
    return support.new_namespace(apiserver)


@pytest.fixture
def custom(apiserver: harness_stack.Stack) -> collections.abc.Iterator[client.CustomObjectsApi]:
    api = support.api_client(apiserver.kubeconfig)
    yield client.CustomObjectsApi(api)
    support.close(api)


@pytest.fixture
def receiver() -> collections.abc.Iterator[support.Receiver]:
    found = support.Receiver()
    yield found
    found.close()
