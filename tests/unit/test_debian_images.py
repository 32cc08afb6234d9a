"""What the stores' Debian images are made of (harness/images/debian.py), without building them: each
image names its suite, the older WordPress comes from bookworm with bookworm's PHP and our same files,
and the cache keys of the trixie images are what they were before images had a suite of their own
(their cached root filesystems stay valid)."""

from __future__ import annotations

import hashlib
import json
import pathlib

import pytest

from harness.images import debian

TRIXIE_SOURCES = (
    "deb http://deb.debian.org/debian trixie main",
    "deb http://deb.debian.org/debian trixie-updates main",
    "deb http://deb.debian.org/debian-security trixie-security main",
)


def _key_before_suites(image: debian.DebianImage) -> str:
    """rootfs_key as it was computed when every image was trixie's (module-wide SUITE and SOURCES)."""
    inputs = {"suite": "trixie", "sources": TRIXIE_SOURCES, "dpkg": debian.DPKG_OPTIONS, "trim": debian.TRIM,
              "packages": image.packages, "users": image.users, "customize": image.customize}  # fmt: skip
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


@pytest.mark.parametrize("name", sorted(debian.IMAGES))
def test_the_trixie_images_keep_their_cache_keys(name: str, tmp_path: pathlib.Path) -> None:
    image = debian.IMAGES[name]
    assert image.suite == "trixie" and image.sources == TRIXIE_SOURCES == debian.SOURCES
    assert image.rootfs_key() == _key_before_suites(image)
    rootfs, packages = debian._rootfs_paths(tmp_path, image)
    assert rootfs == tmp_path / "rootfs" / f"{name}-trixie-{image.rootfs_key()}.tar"
    assert packages == tmp_path / "rootfs" / f"{name}-trixie-{image.rootfs_key()}.packages.json"
    assert image.tag.endswith("-trixie")


def test_the_wordpress_6_1_image_is_bookworms_with_the_same_files() -> None:
    old, new = debian.PREVIOUS["wordpress-6.1"], debian.IMAGES["wordpress"]
    assert old.ref == "storeops.local/wordpress:6.1-apache-bookworm"
    assert new.ref == "storeops.local/wordpress:6.8-apache-trixie"
    assert old.suite == "bookworm"
    assert old.sources == (
        "deb http://deb.debian.org/debian bookworm main",
        "deb http://deb.debian.org/debian bookworm-updates main",
        "deb http://deb.debian.org/debian-security bookworm-security main",
    )
    # Bookworm's PHP 8.2 with the extensions the trixie image has in 8.4; bookworm's default theme.
    assert "libapache2-mod-php8.2" in old.packages and "libapache2-mod-php8.4" in new.packages
    assert [p.replace("8.2", "8.4") for p in old.packages if p.startswith("php")] == \
        [p for p in new.packages if p.startswith("php")]  # fmt: skip
    assert "wordpress-theme-twentytwentythree" in old.packages
    # One harness/images/wordpress/ folder: the same entrypoint and configuration, the same layout.
    assert (old.name, old.files, old.config, old.customize, old.main) == \
        (new.name, new.files, new.config, new.customize, new.main)  # fmt: skip
    assert old.rootfs_key() != new.rootfs_key() and old.key() != new.key()


def test_the_suite_names_the_cached_root_filesystem_and_the_labels(tmp_path: pathlib.Path) -> None:
    old = debian.PREVIOUS["wordpress-6.1"]
    rootfs, _ = debian._rootfs_paths(tmp_path, old)
    assert rootfs.name == f"wordpress-bookworm-{old.rootfs_key()}.tar"
    labels = debian._labels(old, {"wordpress": "6.1.9+dfsg1-0+deb12u1"})
    assert labels["org.opencontainers.image.base.name"] == "debian:bookworm"
    assert labels["org.opencontainers.image.version"] == "6.1.9+dfsg1-0+deb12u1"
    assert "bookworm-security" in labels["org.opencontainers.image.source"]


def test_older_images_are_built_only_when_named() -> None:
    # build_all (what the node tests and the demo import) is the local profile's set; older releases
    # are built by name.
    assert not set(debian.PREVIOUS) & set(debian.IMAGES)
    assert {image.ref for image in debian.IMAGES.values()}.isdisjoint(image.ref for image in debian.PREVIOUS.values())
