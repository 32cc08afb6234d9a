"""Where a store's images come from: the chart's defaults, then the cluster profile's ``images``.

Pure. The rules, in order, for each image of the store's engine (a chart component with an ``image``):

1. Start from the chart's default (``templates/<engine>/values.yaml``, ``<component>.image``).
2. An override in the profile (``images.overrides.<component>``) replaces the repository, the tag, or both.
3. With ``images.registry``, a repository that is on Docker Hub (no registry host of its own, or
   ``docker.io/...``) is pulled through the mirror: ``mariadb`` -> ``<registry>/library/mariadb``,
   ``bitnami/redis`` -> ``<registry>/bitnami/redis``. That is the path Harbor proxy-cache projects,
   Artifactory and Nexus Docker remotes serve Docker Hub under. A repository with its own registry host
   (``ghcr.io/...``, ``storeops.local/...``) is left as it is: one mirror serves one upstream, so
   images from other registries are set in ``overrides``.

Store entries have no image settings, so the profile has the last word over the chart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from generator import models, validation

#: The names Docker Hub goes by in a repository: an image under one of them is a Docker Hub image.
DOCKER_HUB_HOSTS = ("docker.io", "index.docker.io", "registry-1.docker.io")
#: Where Docker Hub keeps its official images (``mariadb`` is ``library/mariadb``).
DOCKER_HUB_OFFICIAL = "library"


@dataclass(frozen=True, order=True)
class Image:
    repository: str
    tag: str

    def __str__(self) -> str:
        return f"{self.repository}:{self.tag}"


def registry_host(repository: str) -> str | None:
    """The registry host a repository names, as container runtimes read it: a first path part with a
    dot or a port, or ``localhost``; None for a Docker Hub short name (``mariadb``, ``bitnami/redis``)."""
    first, slash, _ = repository.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first
    return None


def mirrored(repository: str, registry: str) -> str:
    """``repository`` as pulled through the mirror ``registry`` (unchanged unless it is on Docker Hub)."""
    host = registry_host(repository)
    if host is not None and host not in DOCKER_HUB_HOSTS:
        return repository
    path = repository.partition("/")[2] if host else repository
    if "/" not in path:
        path = f"{DOCKER_HUB_OFFICIAL}/{path}"
    return f"{registry}/{path}"


def chart_images(values: Any) -> dict[str, Image]:
    """The images a chart's values sets: ``{component: Image}`` for each top-level ``<component>.image``
    with a string ``repository`` and ``tag``."""
    out: dict[str, Image] = {}
    if not isinstance(values, Mapping):
        return out
    for component, settings in values.items():
        image = settings.get("image") if isinstance(settings, Mapping) else None
        if isinstance(image, Mapping) and isinstance(image.get("repository"), str) \
                and isinstance(image.get("tag"), (str, int, float)):
            out[str(component)] = Image(image["repository"], str(image["tag"]))
    return out


def needs_chart(profile: models.Images | None, engine: str) -> list[str]:
    """The components of ``engine`` whose chart default the profile needs: those the mirror prefix
    applies to without an overriding repository."""
    if profile is None or profile.registry is None:
        return []
    return [c for c in validation.engine_images(engine)
            if (override := profile.override(c)) is None or override.repository is None]


def profile_images(engine: str, profile: models.Images | None,
                   defaults: Mapping[str, Image]) -> dict[str, dict[str, str]]:
    """What the profile sets for ``engine``'s images, as Helm values: ``{component: {"repository": ...,
    "tag": ...}}`` with the fields the profile sets; what it leaves alone stays the chart's default.

    ``defaults`` are the chart's images; the mirror prefix needs those of :func:`needs_chart`
    (the fleet checks that the charts are there when a profile has a registry). Raises KeyError without.
    """
    out: dict[str, dict[str, str]] = {}
    if profile is None:
        return out
    for component in validation.engine_images(engine):
        override = profile.override(component) or models.ImageOverride()
        fields: dict[str, str] = {}
        if override.repository is not None:
            fields["repository"] = override.repository
            if profile.registry is not None:
                fields["repository"] = mirrored(override.repository, profile.registry)
        elif profile.registry is not None:
            default = defaults.get(component)
            if default is None:
                raise KeyError(f"the {engine} chart's default image of {component!r} is not known")
            if (repository := mirrored(default.repository, profile.registry)) != default.repository:
                fields["repository"] = repository
        if override.tag is not None:
            fields["tag"] = override.tag
        if fields:
            out[component] = fields
    return out


def effective(engine: str, profile: models.Images | None, defaults: Mapping[str, Image]) -> dict[str, Image]:
    """The image each component of ``engine`` runs: the chart's default with the profile's settings."""
    settings = profile_images(engine, profile, defaults)
    out = {}
    for component in validation.engine_images(engine):
        default = defaults.get(component)
        fields = settings.get(component, {})
        repository = fields.get("repository", default.repository if default else None)
        tag = fields.get("tag", default.tag if default else None)
        if repository is not None and tag is not None:
            out[component] = Image(repository, tag)
    return out
