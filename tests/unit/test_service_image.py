"""The service image's name (harness/images/service.py) is the one the platform's Deployment runs, without
building it (tests/integration/test_service_image.py builds and runs it)."""

from __future__ import annotations

import pathlib

import yaml

from harness.images import service

DEPLOYMENT = pathlib.Path(__file__).resolve().parents[2] / "argocd" / "platform" / "deployment.yaml"


def test_the_deployment_names_the_image_built_here() -> None:
    containers = yaml.safe_load(DEPLOYMENT.read_text())["spec"]["template"]["spec"]["containers"]
    assert [c["image"] for c in containers] == [service.REF] == [f"ghcr.io/storeops/storeops:{service.VERSION}"]
    assert service.IMAGE.ref == service.REF and service.IMAGE.suite == "trixie"
