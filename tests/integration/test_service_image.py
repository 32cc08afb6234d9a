"""The service image (harness/images/service.py), built here and run without the node.

The image is built (or taken from the cache), its archive unpacked as containerd would (index.json, the
manifest, each layer in order) into a temporary folder, and the image's own programs run there in a
chroot as the Deployment runs them: as 10001:10001 with the image's environment and working folder.
One run has the Deployment's setting too: the root filesystem read-only, fresh writable folders on
/tmp and /var/lib/storeops, in a mount namespace of its own; ``storeops serve`` answers /readyz there.
Needs root (mmdebstrap, chroot, mounts); without it the tests skip, saying so.
"""

from __future__ import annotations

import json
import os
import pathlib
import shlex
import shutil
import stat
import subprocess
import tarfile
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from harness.images import debian, service
from tests.integration.intake.test_crash import free_port

REPO = pathlib.Path(__file__).resolve().parents[2]
DEPLOYMENT = REPO / "argocd" / "platform" / "deployment.yaml"
#: Import name of every dependency pyproject.toml names (and of httpx, which the sign-in imports).
IMPORTS = ("starlette", "uvicorn", "git", "ruamel.yaml", "kubernetes", "github", "yaml", "jsonschema",
           "fastjsonschema", "minio", "standardwebhooks", "jwt", "jinja2", "psycopg", "httpx")  # fmt: skip
TIMEOUT = 120
#: The character devices of major 1 every container has (name -> minor).
DEVICES = {"null": 3, "zero": 5, "full": 7, "random": 8, "urandom": 9}


def _missing() -> str:
    if os.geteuid() != 0:
        return "building and running the service image needs root (mmdebstrap --mode=root, chroot)"
    for tool in (debian.MMDEBSTRAP, "chroot", "unshare", "tar"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return ""


@pytest.fixture(scope="module")
def built() -> service.Built:
    if missing := _missing():
        pytest.skip(missing)
    return service.build()


def _blob(oci: tarfile.TarFile, digest: str) -> Any:
    handle = oci.extractfile(f"blobs/sha256/{digest.removeprefix('sha256:')}")
    assert handle is not None
    return json.load(handle)


@pytest.fixture(scope="module")
def unpacked(built: service.Built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[pathlib.Path, Any, Any]]:
    """(root folder, index.json, image config): the archive's layers extracted in order, as root."""
    root = tmp_path_factory.mktemp("service-image") / "root"
    root.mkdir()
    with tarfile.open(built.image.archive) as oci:
        index = json.load(oci.extractfile("index.json"))  # type: ignore[arg-type]
        manifest = _blob(oci, index["manifests"][0]["digest"])
        config = _blob(oci, manifest["config"]["digest"])
        for layer in manifest["layers"]:
            source = oci.extractfile(f"blobs/sha256/{layer['digest'].removeprefix('sha256:')}")
            assert source is not None
            with subprocess.Popen(["tar", "-x", "-p", "--numeric-owner", "-C", str(root)],
                                  stdin=subprocess.PIPE) as untar:  # fmt: skip
                assert untar.stdin is not None
                shutil.copyfileobj(source, untar.stdin, 1 << 20)
                untar.stdin.close()
            assert untar.returncode == 0
    # The container runtime provides /dev (the image has none): git needs /dev/null and /dev/urandom.
    (root / "dev").mkdir(exist_ok=True)
    for name, minor in DEVICES.items():
        os.mknod(root / "dev" / name, 0o666 | stat.S_IFCHR, os.makedev(1, minor))
        os.chmod(root / "dev" / name, 0o666)
    yield root, index, config
    shutil.rmtree(root.parent, ignore_errors=True)


def _inside(root: pathlib.Path, config: Any, *argv: str, user: str | None = None,
            env: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """argv run in the image as its config says: its user (or `user`), environment and working folder."""
    user = user or config["config"]["User"]
    inside = ["/usr/bin/env", "-i", "-C", config["config"]["WorkingDir"], *config["config"]["Env"], *env, *argv]
    return subprocess.run(["chroot", f"--userspec={user}", str(root), *inside], capture_output=True, text=True,
                          timeout=TIMEOUT, check=False)  # fmt: skip


def _python(root: pathlib.Path, config: Any, code: str) -> str:
    done = _inside(root, config, "python3", "-c", code)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_deployment_runs_the_image_built_here(built: service.Built, unpacked: tuple[pathlib.Path, Any, Any]
                                                  ) -> None:  # fmt: skip
    _, index, config = unpacked
    deployment = yaml.safe_load(DEPLOYMENT.read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == service.REF == built.image.ref == f"ghcr.io/storeops/storeops:{service.VERSION}"
    # ctr images import names the image after this annotation.
    assert index["manifests"][0]["annotations"]["io.containerd.image.name"] == service.REF
    # The Deployment's user, arguments and port are the image's.
    pod = deployment["spec"]["template"]["spec"]["securityContext"]
    assert config["config"]["User"] == f"{pod['runAsUser']}:{pod['runAsGroup']}" == "10001:10001"
    assert config["config"]["Entrypoint"] == ["python3", "-m", "webhook.cli"]
    assert config["config"]["Cmd"] == container["args"] == ["serve"]
    assert set(config["config"]["ExposedPorts"]) == {f"{container['ports'][0]['containerPort']}/tcp"}
    labels = config["config"]["Labels"]
    assert labels["org.opencontainers.image.version"] == service.VERSION
    assert "storeops" in labels["org.opencontainers.image.source"]
    assert labels["local.storeops.debian.python3"] == built.packages["python3"]
    # Built once: a second call finds the archive in the cache.
    again = service.build()
    assert again.cached and again.image.archive == built.image.archive and again.site_seconds == 0


def test_the_images_python_imports_every_dependency_and_module(unpacked: tuple[pathlib.Path, Any, Any]) -> None:
    root, _, config = unpacked
    code = (
        "import importlib, pkgutil, sys\n"
        f"for name in {IMPORTS!r}: importlib.import_module(name)\n"
        "import generator, webhook, psycopg\n"
        "modules = [m.name for p in (generator, webhook)\n"
        "           for m in pkgutil.walk_packages(p.__path__, p.__name__ + '.')]\n"
        "for name in modules: importlib.import_module(name)\n"
        "print(sys.version_info[:2], psycopg.pq.__impl__, len(modules), webhook.__file__, sys.dont_write_bytecode)"
    )  # fmt: skip
    version, impl, count, location, no_bytecode = _python(root, config, code).strip().rsplit(" ", 4)
    assert version == f"({service.PYTHON_VERSION.replace('.', ', ')})"
    assert impl == "binary"  # psycopg's C implementation, from psycopg-binary's wheel for this Python
    assert int(count) > 50 and location == f"/{service.SITE_DIR}/webhook/__init__.py" and no_bytecode == "True"


def test_the_command_line_answers(unpacked: tuple[pathlib.Path, Any, Any]) -> None:
    root, _, config = unpacked
    entrypoint = config["config"]["Entrypoint"]
    top = _inside(root, config, *entrypoint, "--help")
    assert top.returncode == 0 and "serve" in top.stdout, top.stderr
    serve = _inside(root, config, *entrypoint, "serve", "--help")
    assert serve.returncode == 0 and "--port" in serve.stdout, serve.stderr


def test_git_and_the_certificates_are_there(unpacked: tuple[pathlib.Path, Any, Any]) -> None:
    root, _, config = unpacked
    assert _inside(root, config, "git", "--version").stdout.startswith("git version 2.")
    # GitPython runs the image's git as the service does: a repository in /tmp (HOME), one commit.
    code = (
        "import git, ssl\n"
        "repo = git.Repo.init('/tmp/check', initial_branch='main')\n"
        "open('/tmp/check/a', 'w').write('a')\n"
        "repo.index.add(['a'])\n"
        "repo.index.commit('a', author=git.Actor('t', 't@example.test'), committer=git.Actor('t', 't@example.test'))\n"
        "print(repo.git.rev_list('--count', 'HEAD'), ssl.create_default_context().cert_store_stats()['x509_ca'])"
    )  # fmt: skip
    commits, authorities = _python(root, config, code).split()
    assert commits == "1" and int(authorities) > 50  # Debian's ca-certificates


def test_the_site_is_read_only_and_compiled(unpacked: tuple[pathlib.Path, Any, Any]) -> None:
    root, _, config = unpacked
    site = f"/{service.SITE_DIR}"
    code = (
        "import os, webhook.app\n"
        f"paths = [os.path.join(d, n) for d, ds, fs in os.walk({site!r}) for n in ds + fs] + [{site!r}]\n"
        "writable = [p for p in paths if os.access(p, os.W_OK)]\n"
        "print(len(paths), len(writable), os.path.exists(webhook.app.__cached__), os.access('.', os.W_OK))"
    )  # fmt: skip
    paths, writable, compiled, state_writable = _python(root, config, code).split()
    assert int(paths) > 1000 and writable == "0"
    # Bytecode of the image's Python, used as is: no compiling at start on a read-only root.
    assert compiled == "True"
    assert state_writable == "True"  # /var/lib/storeops, the working folder
    assert not list((root / service.SITE_DIR).rglob("*cpython-311*")) and not (root / service.SITE_DIR / "bin").exists()
    owners = {(p.lstat().st_uid, p.lstat().st_gid) for p in (root / service.SITE_DIR).rglob("*")}
    assert owners == {(0, 0)}
    state = (root / service.STATE_DIR).stat()
    assert (state.st_uid, state.st_gid) == (service.USER, service.USER)


def test_serve_answers_on_a_read_only_root(unpacked: tuple[pathlib.Path, Any, Any]) -> None:
    """The image's command (`serve`) as the Deployment runs it: read-only root, empty /tmp and state."""
    root, _, config = unpacked
    port = free_port()
    inside = ["/usr/bin/env", "-i", "-C", config["config"]["WorkingDir"], *config["config"]["Env"],
              "STOREOPS_HOST=127.0.0.1", f"STOREOPS_PORT={port}", *config["config"]["Entrypoint"],
              *config["config"]["Cmd"]]  # fmt: skip
    r = shlex.quote(str(root))
    script = (
        f"mount --bind {r} {r} && mount -o remount,bind,ro {r} && mount --make-private {r} && "
        f"mount -t tmpfs -o mode=1777 tmp {r}/tmp && "
        f"mount -t tmpfs -o mode=0755,uid={service.USER},gid={service.USER} state {r}/{service.STATE_DIR} && "
        f"exec chroot --userspec={config['config']['User']} {r} {shlex.join(inside)}"
    )
    server = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-ec", script],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
                if answer.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, server.stdout.read() if server.stdout else ""
            time.sleep(0.2)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=30)
    # Nothing was written to the image's files.
    assert not (root / service.STATE_DIR / "remote.git").exists()
