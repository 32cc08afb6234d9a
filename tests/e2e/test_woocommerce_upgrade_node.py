"""A WooCommerce store's engine upgrade on the real node, through Argo CD and Traefik: WordPress 6.1 to 6.8.

The store is installed on ``storeops.local/wordpress:6.1-apache-bookworm`` (Debian 12's WordPress and
PHP 8.2, harness/images/debian.py's PREVIOUS), named by the local cluster profile's
``images.overrides.wordpress``. The owner logs in and writes a post. Then the platform team moves the
cluster to ``6.8-apache-trixie`` the way an operator does: a commit to the cluster profile, the store
re-rendered by the generator and committed; Argo CD syncs it. The wordpress Deployment's init
container replaces the volume's core (templates/woocommerce/files/core-upgrade.sh), the setup Job
upgrades the database with WordPress's wp_upgrade (files/setup.php), and the owner's login, the site
title and the post are all still there, served by 6.8.

As everywhere on this machine, the plugin source serves nothing (WooCommerce cannot be installed
here): each setup run stops at the plugin step with that reason, after the WordPress steps this test
is about. The first sync's retries of that failure are ended as ``argocd app terminate-op`` ends them
(Argo CD retries an operation at its own revision), so the profile change is synced at once.
"""

from __future__ import annotations

import pathlib
import re
import time
from typing import Any

import pytest

from harness import stack
from harness.images import debian
from tests.conftest import git
from tests.e2e.test_store_charts import _kubectl_json, _render, _repository
from tests.e2e.test_store_node import _describe
from tests.e2e.test_woocommerce_node import Browser, _admin_password, _deploy, _site_name, _store, _wait

pytestmark = [pytest.mark.e2e, pytest.mark.node]

OLD_TAG, NEW_TAG = "6.1-apache-bookworm", "6.8-apache-trixie"
OLD_CORE, NEW_CORE = "6.1.", "6.8."
#: $wp_db_version of WordPress 6.1 and of 6.8 (wp-includes/version.php of each).
OLD_DB, NEW_DB = 53496, 60421
STORE_NAME = "Upgrade Test Shop"
TIMEOUT = 900.0


@pytest.fixture(scope="module")
def cluster(argocd_node_stack: stack.Stack) -> stack.Stack:
    """The stack with the local store images and the older WordPress imported into the node's containerd."""
    assert argocd_node_stack.node is not None
    archives = [built.image.archive for built in debian.build_all().values()]
    archives.append(debian.build("wordpress-6.1").image.archive)
    for archive in archives:
        argocd_node_stack.node.ctr("images", "import", str(archive), timeout=600)
    return argocd_node_stack


def _exec(cluster: stack.Stack, namespace: str, target: str, script: str) -> str:
    out: str = cluster.kubectl.run("exec", "-n", namespace, target, "--", "sh", "-c", script, timeout=120)
    return out


def _core_version(cluster: stack.Stack, namespace: str) -> str:
    """The $wp_version of the content volume's core, read in the running WordPress pod."""
    text = _exec(cluster, namespace, "deploy/wordpress", "cat /var/www/html/wp-includes/version.php")
    found = re.search(r"^\$wp_version = '([^']+)';", text, re.M)
    assert found, text
    return found.group(1)


def _db_version(cluster: stack.Stack, namespace: str) -> int:
    """db_version in the options table, read with the MariaDB client in the database's pod."""
    query = "SELECT option_value FROM wp_options WHERE option_name = 'db_version'"
    out = _exec(cluster, namespace, "mariadb-0",
                f'mariadb -u"$MARIADB_USER" -p"$MARIADB_PASSWORD" "$MARIADB_DATABASE" -Nse "{query}"')  # fmt: skip
    return int(out.strip())


def _served_core(browser: Browser) -> str | None:
    """The WordPress version the home page names (its generator meta tag), as Traefik serves it."""
    status, _, page = browser.get("/")
    found = re.search(rb'<meta name="generator" content="WordPress ([0-9][^"]*)"', page) if status == 200 else None
    return found.group(1).decode() if found else None


def _write_post(browser: Browser) -> int:
    """A published post, written by the logged-in owner through WordPress's REST API."""
    status, _, nonce = browser.get("/wp-admin/admin-ajax.php?action=rest-nonce")
    assert status == 200 and nonce, (status, nonce)
    status, _, post = browser.json("POST", "/?rest_route=/wp/v2/posts",
                                   {"title": "Written on 6.1", "content": "Before the upgrade.", "status": "publish"},
                                   {"X-WP-Nonce": nonce.decode()})  # fmt: skip
    assert status == 201, post
    return int(post["id"])


def _post_title(browser: Browser, post_id: int) -> str | None:
    status, _, post = browser.json("GET", f"/?rest_route=/wp/v2/posts/{post_id}")
    return str(post["title"]["rendered"]) if status == 200 else None


def _end_retries(cluster: stack.Stack, app_name: str) -> None:
    """End the Application's running operation (its retries of the failing plugin step), as
    `argocd app terminate-op` does: the operation's phase set to Terminating, then wait for its end.
    Asked again while the phase reads Running: the controller, writing an attempt's state at that
    moment, can put Running back over it."""

    def phase() -> str:
        app: dict[str, Any] = cluster.application(app_name) or {}
        return str(((app.get("status") or {}).get("operationState") or {}).get("phase", ""))

    def ended() -> bool:
        current = phase()
        if current == "Running":
            cluster.kubectl.run("patch", "applications.argoproj.io", app_name, "-n", cluster.namespace, "--type",
                                "merge", "-p", '{"status": {"operationState": {"phase": "Terminating"}}}')  # fmt: skip
        return current not in ("Running", "Terminating")

    _wait("the running sync operation to end", ended, timeout=300, interval=5.0)


def _setup_logs(cluster: stack.Stack, namespace: str) -> str:
    """The logs of every setup Job Pod there is now (Argo CD replaces the Job on each retry)."""
    pods = _kubectl_json(cluster.kubectl, "get", "pods", "-n", namespace, "-l", "job-name=setup")["items"]
    return "\n".join(cluster.kubectl.run("logs", "-n", namespace, p["metadata"]["name"], check=False) for p in pods)


def _wordpress_pod(cluster: stack.Stack, namespace: str, tag: str) -> dict[str, Any] | None:
    """The Ready WordPress Pod running the image of `tag`, if there is one."""
    pods = _kubectl_json(cluster.kubectl, "get", "pods", "-n", namespace,
                         "-l", "app.kubernetes.io/component=wordpress")["items"]  # fmt: skip
    for pod in pods:
        image = pod["spec"]["containers"][0]["image"]
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions") or [])
        if image.endswith(f":{tag}") and ready and not pod["metadata"].get("deletionTimestamp"):
            return pod  # type: ignore[no-any-return]
    return None


def _move_profile(cluster: stack.Stack, repo: pathlib.Path, store: Any, old: str, new: str) -> float:
    """What the platform team does: the profile's WordPress tag changed in a commit, the store
    re-rendered by the generator and committed; Argo CD asked to compare. When it was committed."""
    _end_retries(cluster, store.app_name)
    profile = repo / "clusters/local.yaml"
    profile.write_text(profile.read_text().replace(f"tag: {old}", f"tag: {new}"))
    git(repo, "commit", "-qam", f"local profile: WordPress {new}")
    files = _render(repo, store)
    values = files[f"rendered/{store.cluster}/values/{store.id}.yaml"]
    assert f"tag: {new}" in values, values
    committed = time.monotonic()
    cluster.refresh(store.app_name)
    return committed


def _init_failure(cluster: stack.Stack, namespace: str, tag: str) -> str | None:
    """The termination message of a failed core-upgrade init container of a WordPress Pod on `tag`."""
    pods = _kubectl_json(cluster.kubectl, "get", "pods", "-n", namespace,
                         "-l", "app.kubernetes.io/component=wordpress")["items"]  # fmt: skip
    for pod in pods:
        if not pod["spec"]["containers"][0]["image"].endswith(f":{tag}"):
            continue
        for status in pod["status"].get("initContainerStatuses") or []:
            for state in (status.get("state") or {}, status.get("lastState") or {}):
                terminated = state.get("terminated") or {}
                if status["name"] == "core-upgrade" and terminated.get("exitCode") == 1:
                    return str(terminated.get("message") or "")
    return None


def test_a_store_on_wordpress_6_1_is_upgraded_to_6_8_with_its_login_and_content(
    cluster: stack.Stack, tmp_path: pathlib.Path
) -> None:
    repo = _repository(tmp_path / "repo")
    profile = repo / "clusters/local.yaml"
    text = profile.read_text()
    assert text.count(f"tag: {NEW_TAG}") == 1, "the local profile does not name the 6.8 WordPress image once"
    profile.write_text(text.replace(f"tag: {NEW_TAG}", f"tag: {OLD_TAG}"))
    git(repo, "commit", "-qam", f"local profile: WordPress {OLD_TAG}")
    store = _store(STORE_NAME)
    namespace = store.namespace
    describe = _describe(cluster, namespace)

    # 1. The store on WordPress 6.1: installed by the setup Job, the owner logs in and writes a post.
    requested = time.monotonic()
    host = _deploy(cluster, repo, store)
    browser = Browser(cluster, host)
    assert _wait("WordPress 6.1 installed by the setup Job", lambda: _site_name(browser), timeout=TIMEOUT,
                 describe=describe) == STORE_NAME  # fmt: skip
    print(f"upgrade: request -> site installed on {OLD_TAG} in {time.monotonic() - requested:.0f}s")
    assert _core_version(cluster, namespace).startswith(OLD_CORE)
    assert (_served_core(browser) or "").startswith(OLD_CORE)
    assert _db_version(cluster, namespace) == OLD_DB
    password = _admin_password(cluster, namespace)
    admin = browser.log_in("admin", password)
    assert b"wp-admin-bar-my-account" in admin
    post_id = _write_post(browser)
    assert _post_title(Browser(cluster, host), post_id) == "Written on 6.1"
    first_install = _setup_logs(cluster, namespace)
    assert "upgrading the WordPress database" not in first_install, first_install

    # 2. The platform team moves the cluster's WordPress to 6.8: the profile, then the store re-rendered.
    changed = _move_profile(cluster, repo, store, OLD_TAG, NEW_TAG)

    # The new Pod's init container replaced the core before Apache started.
    pod = _wait(f"a Ready WordPress Pod on {NEW_TAG}", lambda: _wordpress_pod(cluster, namespace, NEW_TAG),
                timeout=TIMEOUT, describe=describe)  # fmt: skip
    print(f"upgrade: profile commit -> WordPress Ready on {NEW_TAG} in {time.monotonic() - changed:.0f}s")
    log = cluster.kubectl.run("logs", "-n", namespace, pod["metadata"]["name"], "-c", "core-upgrade")
    assert re.search(rf"upgrading WordPress core from {re.escape(OLD_CORE)}\d+ to {re.escape(NEW_CORE)}\d+", log), log
    assert "WordPress core upgraded from" in log, log
    core = _core_version(cluster, namespace)
    assert core.startswith(NEW_CORE), core
    owners = _exec(cluster, namespace, "deploy/wordpress",
                   "stat -c %u /var/www/html/wp-includes/version.php /var/www/html/wp-admin/index.php; "
                   "ls -A /var/www/html")  # fmt: skip
    assert owners.split()[:2] == ["33", "33"], owners
    assert ".storeops-core" not in owners, owners

    # The setup Job (PostSync) upgraded the database with wp_upgrade, before the plugin step's failure.
    def upgraded() -> str | None:
        logs = _setup_logs(cluster, namespace)
        return logs if f"WordPress database upgraded to db_version {NEW_DB}" in logs else None

    logs = _wait("the setup Job to upgrade the database", upgraded, timeout=TIMEOUT, describe=describe, interval=2.0)
    print(f"upgrade: profile commit -> database upgraded in {time.monotonic() - changed:.0f}s")
    assert f"upgrading the WordPress database from db_version {OLD_DB} to {NEW_DB}" in logs, logs
    assert _db_version(cluster, namespace) == NEW_DB

    # Through Traefik: 6.8 serves the store, the owner's login lands on the dashboard (not on
    # WordPress's "Database Update Required"), the title and the post are the ones written on 6.1.
    assert (_served_core(Browser(cluster, host)) or "").startswith(NEW_CORE)
    page = Browser(cluster, host).log_in("admin", password)
    assert b"wp-admin-bar-my-account" in page and b"Dashboard" in page
    assert b"Database Update Required" not in page
    assert _site_name(Browser(cluster, host)) == STORE_NAME
    assert _post_title(Browser(cluster, host), post_id) == "Written on 6.1"
    print(f"upgrade: {OLD_TAG} -> {NEW_TAG} (core {core}, db_version {OLD_DB} -> {NEW_DB}) "
          f"in {time.monotonic() - changed:.0f}s after the profile commit")  # fmt: skip

    # 3. Back to 6.1 by mistake: the init container refuses (the volume's core and database are 6.8's),
    # WordPress does not start on it, and the reason is the container's termination message.
    changed = _move_profile(cluster, repo, store, NEW_TAG, OLD_TAG)
    message = _wait(f"the core upgrade to refuse {OLD_TAG}", lambda: _init_failure(cluster, namespace, OLD_TAG),
                    timeout=TIMEOUT, describe=describe)  # fmt: skip
    print(f"upgrade: profile commit -> {OLD_TAG} refused in {time.monotonic() - changed:.0f}s: {message}")
    assert message.startswith(f"core upgrade failed: the volume has WordPress {core}, newer than the image's "
                              f"{OLD_CORE}"), message  # fmt: skip
    assert "WordPress cannot go back" in message and "restore the backup" in message, message
    assert _wordpress_pod(cluster, namespace, OLD_TAG) is None
    health = ((cluster.application(store.app_name) or {}).get("status") or {}).get("health") or {}  # type: ignore[union-attr]
    assert health.get("status") != "Healthy", health

    # 4. Forward again to 6.8: the core is the image's, nothing to copy; the store answers with its post.
    changed = _move_profile(cluster, repo, store, OLD_TAG, NEW_TAG)
    pod = _wait(f"a Ready WordPress Pod on {NEW_TAG} again", lambda: _wordpress_pod(cluster, namespace, NEW_TAG),
                timeout=TIMEOUT, describe=describe)  # fmt: skip
    print(f"upgrade: profile commit -> back on {NEW_TAG} in {time.monotonic() - changed:.0f}s")
    log = cluster.kubectl.run("logs", "-n", namespace, pod["metadata"]["name"], "-c", "core-upgrade")
    assert f"WordPress core {core}, as in the image: nothing to do" in log, log
    assert _core_version(cluster, namespace) == core
    assert _post_title(Browser(cluster, host), post_id) == "Written on 6.1"
