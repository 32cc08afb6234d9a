"""Starting, watching and stopping the component processes, by pid only."""

from __future__ import annotations

import collections.abc
import contextlib
import ctypes
import dataclasses
import logging
import os
import pathlib
import signal
import socket
import subprocess
import time

from harness import errors

__all__ = ["Process", "adopt", "free_port", "spawn", "tail", "wait_until"]

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


@dataclasses.dataclass
class Process:
    """One component process this harness started; stop() signals only its own process group.

    Each component runs in a new session, so its pid is also its process-group id: signalling the
    group reaches helpers it forked (git, helm) and nothing else.
    """

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: pathlib.Path
    pid: int
    popen: subprocess.Popen[bytes] | None = None

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return _pid_runs(self.pid, self.argv[0])

    def exit_code(self) -> int | None:
        return self.popen.poll() if self.popen is not None else None

    def stop(self, *, timeout: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL it if still there after `timeout` seconds."""
        if not self.alive():
            self._reap()
            return
        logger.info("stopping %s (pid %d)", self.name, self.pid)
        _signal_group(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                break
            time.sleep(0.1)
        else:
            logger.warning("%s (pid %d) ignored SIGTERM for %.0fs; killing it", self.name, self.pid, timeout)
            _signal_group(self.pid, signal.SIGKILL)
        self._reap()

    def _reap(self) -> None:
        if self.popen is not None:
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                logger.warning("%s (pid %d) did not exit", self.name, self.pid)

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "pid": self.pid, "argv": self.argv, "log": str(self.log_path)}


def spawn(
    name: str,
    argv: collections.abc.Sequence[str],
    *,
    log_dir: pathlib.Path,
    env: collections.abc.Mapping[str, str] | None = None,
    cwd: pathlib.Path | None = None,
    tie_to_parent: bool = False,
) -> Process:
    """Start argv in its own session with stdout and stderr appended to <log_dir>/<name>.log.

    tie_to_parent: the kernel SIGKILLs the process when this (Python) process dies, so a test run
    that is killed outright leaves nothing behind (SIGKILL: on SIGTERM kube-apiserver waits for an
    etcd that is going away too). Off for `stack.sh start`, which exits at once.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    full_env = dict(os.environ)
    full_env.update(env or {})
    with log_path.open("ab") as log_file:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent_hook() if tie_to_parent else None,
        )
    logger.info("started %s (pid %d), log %s", name, popen.pid, log_path)
    return Process(name=name, argv=list(argv), env=dict(env or {}), log_path=log_path, pid=popen.pid, popen=popen)


def adopt(description: collections.abc.Mapping[str, object]) -> Process:
    """A Process for a component a previous `stack.sh start` left running (from Process.describe)."""
    argv = description["argv"]
    assert isinstance(argv, list)
    return Process(
        name=str(description["name"]),
        argv=[str(a) for a in argv],
        env={},
        log_path=pathlib.Path(str(description["log"])),
        pid=int(str(description["pid"])),
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(
    what: str,
    check: collections.abc.Callable[[], bool],
    *,
    timeout: float,
    interval: float = 0.25,
    process: Process | None = None,
) -> None:
    """Poll check() until it returns True; StartupError naming `what` on timeout or if process dies."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and not process.alive():
            raise errors.StartupError(
                f"{process.name} exited (code {process.exit_code()}) while waiting for {what}; "
                f"last lines of {process.log_path}:\n{tail(process.log_path)}"
            )
        try:
            if check():
                return
        except Exception as e:
            last_error = e
        time.sleep(interval)
    detail = f" (last probe error: {last_error})" if last_error else ""
    logs = f"; last lines of {process.log_path}:\n{tail(process.log_path)}" if process else ""
    raise errors.StartupError(f"timed out after {timeout:.0f}s waiting for {what}{detail}{logs}")


def tail(path: pathlib.Path, *, lines: int = 60) -> str:
    """The last `lines` lines of a log file ('' when it does not exist)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 256 * 1024))
            data = f.read()
    except FileNotFoundError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


def _die_with_parent_hook() -> collections.abc.Callable[[], None]:
    """A preexec_fn setting PR_SET_PDEATHSIG(SIGKILL); libc is loaded here, before the fork."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def hook() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)

    return hook


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _pid_runs(pid: int, executable: str) -> bool:
    """True if pid is alive and still runs `executable` (guards against a recycled pid)."""
    try:
        cmdline = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        return False
    # Some programs (redis-server) rewrite their title as "<argv0> <address>".
    argv0 = cmdline.split(b"\0", 1)[0].split(b" ", 1)[0].decode(errors="replace")
    return argv0 == executable
