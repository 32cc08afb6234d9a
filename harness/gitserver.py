"""A local Git server (`git daemon`) for tests that need a network remote rather than a path.

Argo CD's repo-server reads `file://` URLs through the git CLI, which is enough for most tests; this
is for the cases where the remote must be reached over the network (clone, fetch and push over
git://127.0.0.1:<port>/<name>). Pushing is enabled: it is a test server on 127.0.0.1 only, or on the
node's bridge gateway, which only this machine and the node's pods reach.
"""

from __future__ import annotations

import dataclasses
import pathlib
import shutil

from harness import components, errors, processes

__all__ = ["GitDaemon", "start"]


@dataclasses.dataclass
class GitDaemon:
    base_path: pathlib.Path
    port: int
    process: processes.Process
    host: str = "127.0.0.1"

    def url(self, name: str) -> str:
        """The git:// URL of the repository <base_path>/<name>."""
        return f"git://{self.host}:{self.port}/{name}"

    def stop(self) -> None:
        self.process.stop()


def start(
    base_path: pathlib.Path, *, log_dir: pathlib.Path, port: int | None = None, tie_to_parent: bool = False,
    host: str = "127.0.0.1",
) -> GitDaemon:
    """Serve every repository under base_path (bare or not) on ``host`` (127.0.0.1, or the node's bridge
    gateway for its pods), fetch and push."""
    git = shutil.which("git")
    if git is None:
        raise errors.StartupError("git is not installed; `bash harness/build.sh` installs it")
    base_path.mkdir(parents=True, exist_ok=True)
    chosen = port or processes.free_port()
    argv = [
        git, "daemon", "--reuseaddr", f"--listen={host}", f"--port={chosen}",
        f"--base-path={base_path}", "--export-all", "--enable=receive-pack", "--informative-errors",
        str(base_path),
    ]  # fmt: skip
    process = processes.spawn("git-daemon", argv, log_dir=log_dir, tie_to_parent=tie_to_parent)
    processes.wait_until(
        f"git daemon on port {chosen}", lambda: components.port_open(chosen, host), timeout=30, process=process
    )
    return GitDaemon(base_path=base_path, port=chosen, process=process, host=host)
