"""The streamed output of ``flwr run``, for a person: every line kept in a log, tracebacks folded on the console.

With ``--stream`` Flower relays the ServerApp's log, and a ServerApp that raises arrives with its whole Python
traceback. The console gets each traceback as its one exception line (``RuntimeError: pretrain: no site
update ...``); the log file keeps everything, and the launcher's final error line quotes the last exception.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

TRACEBACK_START = "Traceback (most recent call last):"
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # terminal colour and cursor codes
ROUND_MARKER = re.compile(r"\[ROUND (\d+)/(\d+)\]")  # Flower's strategy log at the start of each round
RoundCallback = Callable[[int, int], None]  # (round, rounds of this strategy run)


def round_marker(line: str) -> tuple[int, int] | None:
    r"""``(k, n)`` when ``line`` is Flower's ``[ROUND k/n]`` (the start of round k of n), else ``None``.

    Example: ``"\x1b[92mINFO \x1b[0m:      [ROUND 3/14]"`` gives ``(3, 14)``.
    """
    found = ROUND_MARKER.search(ANSI.sub("", line))
    return None if found is None else (int(found.group(1)), int(found.group(2)))


@dataclass
class TracebackFolder:
    """Feed lines; get back what the console should show (``None``: hidden inside a traceback).

    Attributes:
        exceptions: the final line of every traceback seen, in order.
    """

    exceptions: list[str] = field(default_factory=list)
    _inside: bool = False

    def feed(self, line: str) -> str | None:
        """The console's version of ``line`` (without its newline), or ``None`` to hide it."""
        text = line.rstrip("\n")
        plain = ANSI.sub("", text)
        if plain.strip() == TRACEBACK_START or plain.endswith(" " + TRACEBACK_START):
            self._inside = True
            return None
        if not self._inside:
            return text
        if not plain.strip() or plain[0] in " \t^~":  # frames, source lines, carets
            return None
        self._inside = False  # the exception line ends the traceback
        self.exceptions.append(plain.strip())
        return text

    @property
    def last_exception(self) -> str | None:
        """The final line of the last traceback, if any."""
        return self.exceptions[-1] if self.exceptions else None


@dataclass(frozen=True)
class StreamResult:
    """How a streamed command ended: its exit code and the last exception its output reported."""

    returncode: int
    last_exception: str | None
    log: Path


def run_streamed(
    command: Sequence[str],
    env: dict[str, str],
    log: Path,
    console: TextIO | None,
    on_round: RoundCallback | None = None,
) -> StreamResult:
    """Run ``command``, appending all its output to ``log`` and showing it folded on ``console`` (if given).

    ``on_round(k, n)`` is called at each of Flower's ``[ROUND k/n]`` lines (a progress bar). The child is killed
    if this process is interrupted while it runs.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    folder = TracebackFolder()
    with log.open("a", encoding="utf-8") as handle:
        process = subprocess.Popen(  # noqa: S603
            list(command), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            encoding="utf-8", errors="replace", bufsize=1,
        )  # fmt: skip
        try:
            assert process.stdout is not None  # piped just above
            for line in process.stdout:
                handle.write(line)
                marker = round_marker(line) if on_round is not None else None
                if marker is not None:
                    on_round(*marker)  # type: ignore[misc]  # on_round is set when a marker is looked for
                shown = folder.feed(line)
                if console is not None and shown is not None:
                    console.write(shown + "\n")
                    console.flush()
        except BaseException:
            process.kill()
            raise
        finally:
            code = process.wait()
    return StreamResult(code, folder.last_exception, log)
