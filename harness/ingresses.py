"""Stand-in for an ingress controller: publishes 127.0.0.1 as the address of every Ingress.

The local stack runs pods on a simulated node (kwok), so no real ingress controller can serve
anything. What storeops and Argo CD observe of one is the address it writes into each Ingress's
status (Argo CD calls an Ingress Healthy only then); this process does exactly that, and nothing
else. Run by harness/stack.py as one of the stack's processes:

    python -m harness.ingresses --kubeconfig KUBECONFIG [--address 127.0.0.1]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import threading
import time
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

# The client's helpers carry no annotations.
_config: Any = config
_watch: Any = watch

logger = logging.getLogger("harness.ingresses")


def publish(api: client.NetworkingV1Api, ingress: Any, address: str) -> bool:
    """Write ``address`` into the Ingress's status unless one is there; True when it wrote."""
    status = ingress.status.load_balancer if ingress.status else None
    if status is not None and status.ingress:
        return False
    body = {"status": {"loadBalancer": {"ingress": [{"ip": address}]}}}
    try:
        api.patch_namespaced_ingress_status(ingress.metadata.name, ingress.metadata.namespace, body)
    except ApiException as e:
        if e.status == 404:
            return False
        raise
    logger.info("published %s for ingress %s/%s", address, ingress.metadata.namespace, ingress.metadata.name)
    return True


def run(*, kubeconfig: str, address: str, stop: threading.Event) -> None:
    api = client.NetworkingV1Api(_config.new_client_from_config(config_file=kubeconfig))
    while not stop.is_set():
        try:
            listed: Any = api.list_ingress_for_all_namespaces()
            for ingress in listed.items:
                publish(api, ingress, address)
            watcher = _watch.Watch()
            for event in watcher.stream(api.list_ingress_for_all_namespaces,
                                        resource_version=listed.metadata.resource_version, timeout_seconds=30):
                if stop.is_set():
                    watcher.stop()
                    break
                if event["type"] in ("ADDED", "MODIFIED"):
                    publish(api, event["object"], address)
        except Exception as e:  # the API server restarts in some tests: list again shortly
            logger.warning("ingress watch interrupted (%s); listing again", e)
            stop.wait(1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--address", default="127.0.0.1")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    logger.info("publishing %s as every Ingress's address", args.address)
    started = time.monotonic()
    with contextlib.suppress(KeyboardInterrupt):
        run(kubeconfig=args.kubeconfig, address=args.address, stop=stop)
    logger.info("stopped after %.0fs", time.monotonic() - started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
