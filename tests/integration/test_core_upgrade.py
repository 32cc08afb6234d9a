"""The WooCommerce chart's WordPress core upgrade (templates/woocommerce/files/core-upgrade.sh), run here
by the host's POSIX shell as the wordpress Deployment's init container runs it in the WordPress image
(``sh -c <script> core-upgrade.sh <image core> <volume>``), as www-data (uid 33) when the tests run as
root, on folders shaped like WordPress: none in the volume, the same version, a newer image, an older
one, and an upgrade interrupted at every step it takes, then run again.
"""

from __future__ import annotations

import collections.abc
import os
import pathlib
import shutil
import stat
import subprocess
import tempfile

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = REPO / "templates/woocommerce/files/core-upgrade.sh"
WWW_DATA = 33
OLD, NEW = "6.1.9", "6.8.12"
#: What the upgrade never touches in the volume.
STORE_FILES = {
    "wp-config.php": "<?php /* the store's configuration */\n",
    ".htaccess": "# the store's rewrite rules\n",
    "wp-content/uploads/2026/11/photo.jpg": "jpeg bytes",
    "wp-content/plugins/woocommerce/woocommerce.php": "<?php /* Version: 10.2.2 */\n",
    "wp-content/themes/twentytwentythree/style.css": "/* the store's theme */\n",
}


@pytest.fixture
def root() -> collections.abc.Iterator[pathlib.Path]:
    """A folder uid 33 can reach (pytest's own is private to root)."""
    folder = pathlib.Path(tempfile.mkdtemp(prefix="core-upgrade-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _core(folder: pathlib.Path, version: str, *, db_version: int = 1) -> pathlib.Path:
    """A WordPress core as an image has it in /usr/src/wordpress: its own files name its version."""
    files = {
        "index.php": f"<?php /* {version} */\n",
        "wp-login.php": f"<?php /* login {version} */\n",
        "wp-config-docker.php": "<?php /* the image's configuration template */\n",
        ".htaccess": "# the image's default rules\n",
        f"wp-admin/only-in-{version}.php": f"<?php /* {version} */\n",
        "wp-admin/index.php": f"<?php /* admin {version} */\n",
        f"wp-includes/only-in-{version}.php": f"<?php /* {version} */\n",
        "wp-includes/version.php": f"<?php\n$wp_version = '{version}';\n$wp_db_version = {db_version};\n",
        "wp-content/themes/twentytwentyfive/style.css": "/* the image's bundled theme */\n",
        "wp-content/index.php": "<?php // Silence is golden.\n",
    }
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def _volume(root: pathlib.Path, version: str | None) -> pathlib.Path:
    """The content volume after a first start with `version` (None: empty) and the store's own files."""
    volume = root / "html"
    volume.mkdir()
    if version is not None:
        shutil.copytree(_core(root / f"first-{version}", version), volume, dirs_exist_ok=True)
        for name, text in STORE_FILES.items():
            (volume / name).parent.mkdir(parents=True, exist_ok=True)
            (volume / name).write_text(text)
    _own(volume)
    return volume


def _own(folder: pathlib.Path) -> None:
    """The pod's fsGroup and runAsUser: the volume belongs to www-data."""
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", f"{WWW_DATA}:{WWW_DATA}", str(folder)], check=True)


def _run(image: pathlib.Path, volume: pathlib.Path, *, path: str | None = None) -> subprocess.CompletedProcess[str]:
    """The init container's command, as uid 33 when we are root."""
    argv = ["sh", "-c", SCRIPT.read_text(), "core-upgrade.sh", str(image), str(volume)]
    if os.geteuid() == 0:
        argv = ["setpriv", f"--reuid={WWW_DATA}", f"--regid={WWW_DATA}", "--clear-groups", *argv]
    env = {"PATH": path or "/usr/bin:/bin", "LC_ALL": "C"}
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, env=env)


def _tree(folder: pathlib.Path) -> dict[str, tuple[str, int]]:
    """Every file under `folder`: its text and its inode (a rewrite changes the inode or the text)."""
    return {str(p.relative_to(folder)): (p.read_text(), p.stat().st_ino) for p in sorted(folder.rglob("*"))
            if p.is_file()}  # fmt: skip


def _texts(folder: pathlib.Path) -> dict[str, str]:
    return {name: text for name, (text, _) in _tree(folder).items()}


def _expected_after_upgrade(image: pathlib.Path) -> dict[str, str]:
    """The image's core, but for wp-content and .htaccess, plus the store's files as they were."""
    expected = {name: text for name, text in _texts(image).items()
                if not name.startswith("wp-content/") and name not in (".htaccess", "wp-config.php")}  # fmt: skip
    return expected | {name: text for name, text in STORE_FILES.items()} | {
        # wp-content/ is the store's: the first start's copy of it stays as it was.
        "wp-content/themes/twentytwentyfive/style.css": "/* the image's bundled theme */\n",
        "wp-content/index.php": "<?php // Silence is golden.\n",
    }


def test_a_volume_without_wordpress_is_left_to_the_first_start(root: pathlib.Path) -> None:
    image, volume = _core(root / "image", NEW), _volume(root, None)
    done = _run(image, volume)
    assert done.returncode == 0, done.stderr
    assert f"no WordPress in {volume} yet: the first start copies WordPress {NEW}" in done.stdout
    assert list(volume.iterdir()) == []


def test_the_same_version_changes_nothing(root: pathlib.Path) -> None:
    image, volume = _core(root / "image", NEW), _volume(root, NEW)
    before = _tree(volume)
    done = _run(image, volume)
    assert done.returncode == 0, done.stderr
    assert f"WordPress core {NEW}, as in the image: nothing to do" in done.stdout
    assert _tree(volume) == before


def test_a_newer_image_replaces_the_core_and_keeps_the_stores_files(root: pathlib.Path) -> None:
    image, volume = _core(root / "image", NEW, db_version=60421), _volume(root, OLD)
    done = _run(image, volume)
    assert done.returncode == 0, done.stderr
    assert f"upgrading WordPress core from {OLD} to {NEW}" in done.stdout
    assert f"WordPress core upgraded from {OLD} to {NEW}" in done.stdout
    # Exactly the new core (the old version's files gone from wp-admin and wp-includes), the store's
    # configuration, rewrite rules and wp-content as they were, no staging folder left.
    assert _texts(volume) == _expected_after_upgrade(image)
    assert not any(p.name.startswith(".storeops-core") for p in volume.iterdir())
    if os.geteuid() == 0:
        owners = {p.stat().st_uid for p in volume.rglob("*")} | {p.stat().st_gid for p in volume.rglob("*")}
        assert owners == {WWW_DATA}
    # A second run finds the same version.
    again = _run(image, volume)
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stderr


def test_an_older_image_fails_with_the_reason_and_touches_nothing(root: pathlib.Path) -> None:
    image, volume = _core(root / "image", OLD), _volume(root, NEW)
    before = _tree(volume)
    done = _run(image, volume)
    assert done.returncode == 1
    assert f"the volume has WordPress {NEW}, newer than the image's {OLD}: WordPress cannot go back" in done.stderr
    assert "restore the backup taken before the upgrade" in done.stderr
    assert _tree(volume) == before


@pytest.mark.parametrize(
    ("image_version", "volume_version", "outcome"),
    [
        ("6.9", "6.9.0", "same"),
        ("6.10", "6.9.4", "upgrade"),
        ("6.9", "6.9-RC1", "upgrade"),
        ("7.0-RC1", "7.0-beta2", "upgrade"),
        ("6.9-beta1", "6.9", "refuse"),
        ("6.8.3", "6.8.12", "refuse"),
    ],
)
def test_versions_are_ordered_as_wordpress_releases_are(
    root: pathlib.Path, image_version: str, volume_version: str, outcome: str
) -> None:
    image, volume = _core(root / "image", image_version), _volume(root, volume_version)
    done = _run(image, volume)
    assert done.returncode == (1 if outcome == "refuse" else 0), done.stdout + done.stderr
    expected = {"same": "nothing to do", "upgrade": f"upgraded from {volume_version} to {image_version}",
                "refuse": "cannot go back"}[outcome]  # fmt: skip
    assert expected in done.stdout + done.stderr


def _failing_after(root: pathlib.Path, command: str, calls: int) -> str:
    """A PATH whose `command` works `calls` times, then fails as a killed or full-disk step would."""
    folder = root / f"bin-{command}-{calls}"
    folder.mkdir()
    counter = root / f"count-{command}-{calls}"
    counter.write_text("0")
    counter.chmod(0o666)
    wrapper = folder / command
    real = shutil.which(command, path="/usr/bin:/bin")
    wrapper.write_text(f"""#!/bin/sh
n=$(($(cat {counter}) + 1)); echo $n > {counter}
if [ $n -gt {calls} ]; then echo "{command} interrupted" >&2; exit 137; fi
exec {real} "$@"
""")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    folder.chmod(0o755)
    return f"{folder}:/usr/bin:/bin"


@pytest.mark.parametrize("command", ["cp", "mv", "rm", "rmdir", "mkdir", "sync"])
def test_an_upgrade_interrupted_at_any_step_is_finished_by_the_next_start(root: pathlib.Path, command: str) -> None:
    image = _core(root / "image", NEW, db_version=60421)
    steps, finished = 0, 0
    while True:
        case = root / f"case-{steps}"
        case.mkdir()
        case.chmod(0o755)
        volume = _volume(case, OLD)
        interrupted = _run(image, volume, path=_failing_after(root, command, steps))
        if interrupted.returncode == 0:
            break  # every step of this kind passed: the upgrade took `steps` of them
        assert f"{command} interrupted" in interrupted.stderr, interrupted.stdout + interrupted.stderr
        # Whatever the interruption left, the next start (the pod restarting the init container)
        # ends with exactly the new core and the store's files.
        resumed = _run(image, volume)
        assert resumed.returncode == 0, f"after {steps} {command}: {resumed.stdout}{resumed.stderr}"
        assert _texts(volume) == _expected_after_upgrade(image), f"after {steps} {command}"
        assert not any(p.name.startswith(".storeops-core") for p in volume.iterdir()), f"after {steps} {command}"
        finished += "finishing an interrupted core upgrade" in resumed.stdout
        steps += 1
    print(f"{command}: the upgrade took {steps} steps, each interrupted once and finished by the next start")
    assert steps >= {"cp": 3, "mv": 5}.get(command, 1), steps
    if command == "mv":
        # Interrupted while moving the staged core into place, the next start finishes that move (and
        # copies nothing again); interrupted while copying, it starts the copy again.
        assert finished == steps - 1, finished
