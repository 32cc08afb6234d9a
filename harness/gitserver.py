"""A local Git server (`git daemon`) for tests that need a network remote rather than a path.

Argo CD's repo-server reads `file://` URLs through the git CLI, which is enough for most tests; this
is for the cases where the remote must be reached over the network (clone, fetch and push over
git://127.0.0.1:<port>/<name>). Pushing is enabled: it is a test server on 127.0.0.1 only.
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

    def url(self, name: str) -> str:
        """The git:// URL of the repository <base_path>/<name>."""
        return f"git://127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        self.process.stop()


def start(
    base_path: pathlib.Path, *, log_dir: pathlib.Path, port: int | None = None, tie_to_parent: bool = False
) -> GitDaemon:
    """Serve every repository under base_path (bare or not) on 127.0.0.1, fetch and push."""
    git = shutil.which("git")
    if git is None:
        raise errors.StartupError("git is not installed; `bash harness/build.sh` installs it")
    base_path.mkdir(parents=True, exist_ok=True)
    chosen = port or processes.free_port()
    argv = [
        git, "daemon", "--reuseaddr", "--listen=127.0.0.1", f"--port={chosen}",
        f"--base-path={base_path}", "--export-all", "--enable=receive-pack", "--informative-errors",
        str(base_path),
    ]  # fmt: skip
    process = processes.spawn("git-daemon", argv, log_dir=log_dir, tie_to_parent=tie_to_parent)
    processes.wait_until(
        f"git daemon on port {chosen}", lambda: components.port_open(chosen), timeout=30, process=process
    )
    return GitDaemon(base_path=base_path, port=chosen, process=process)
