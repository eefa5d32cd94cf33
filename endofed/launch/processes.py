"""Child processes that are always ended by PID, with their output in log files."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from endofed.errors import EndofedError

FLOWER_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
}


class LaunchError(EndofedError):
    """A Flower process could not be started or did not become ready."""


def free_port() -> int:
    """An unused TCP port on 127.0.0.1 (bind to port 0 and ask the kernel)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def flower_env(flwr_home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for Flower processes: telemetry, update checks and runtime installs off, own FLWR_HOME."""
    env = dict(os.environ)
    env.update(FLOWER_ENV)
    env["FLWR_HOME"] = str(flwr_home)
    env.update(extra or {})
    return env


class Child:
    """A background process in its own process group; output goes to ``log``."""

    def __init__(self, name: str, command: Sequence[str], log: Path, env: Mapping[str, str]) -> None:
        self.name, self.log = name, log
        log.parent.mkdir(parents=True, exist_ok=True)
        self._handle = log.open("ab")
        try:
            self.process = subprocess.Popen(  # noqa: S603 - our own command line
                list(command), stdout=self._handle, stderr=subprocess.STDOUT, env=dict(env), start_new_session=True
            )
        except OSError as exc:
            self._handle.close()
            raise LaunchError(f"cannot start {name} ({command[0]}): {exc}") from None

    @property
    def pid(self) -> int:
        """The process id."""
        return int(self.process.pid)

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.process.poll() is None

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM the process group by PID, then SIGKILL after ``grace_s``; idempotent."""
        if self.alive():
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=grace_s)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.process.wait(timeout=grace_s)
        self._handle.close()

    def tail(self, lines: int = 20) -> str:
        """The last lines of the process log (for error messages)."""
        text = self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C inside the block, so ``finally`` clauses stop the children we started."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def wait_for_port(child: Child, port: int, timeout_s: float = 60.0) -> None:
    """Wait until ``child`` accepts TCP connections on 127.0.0.1:``port``.

    Raises:
        LaunchError: the process exited or the port did not open in time (with the log's last lines).
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not child.alive():
            raise LaunchError(
                f"{child.name} exited with code {child.process.returncode}; log {child.log}:\n{child.tail()}"
            )
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.25)
    raise LaunchError(f"{child.name} did not open port {port} within {timeout_s:.0f} s; log {child.log}")
