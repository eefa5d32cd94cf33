"""Folding tracebacks in ``flwr run``'s streamed output: the console gets the exception line, the log all of it."""

from __future__ import annotations

import io
import sys

from endofed.launch.stream import TracebackFolder, run_streamed

# What Flower 1.42 streamed when a simulated ServerApp raised (frames shortened; ANSI colours as sent).
STREAMED = """\x1b[92mINFO \x1b[0m:      [ROUND 1/1]
\x1b[91mERROR \x1b[0m:     Simulation raised an exception
Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/flwr/simulation/app.py", line 337, in run_simulation_process
    simulation_result = _run_simulation(
                        ^^^^^^^^^^^^^^^^
  File "/run/flwr-home/apps/endofed/server/app.py", line 151, in _phase
    raise RuntimeError(f"{phase}: no round had a valid site update")
RuntimeError: pretrain: no round had a valid site update
\x1b[91mERROR \x1b[0m:     Exit Code: 700

An unhandled exception occurred when running the simulation.
"""


def test_a_traceback_becomes_its_exception_line():
    folder = TracebackFolder()
    shown = [s for s in (folder.feed(line) for line in STREAMED.splitlines(keepends=True)) if s is not None]
    assert shown == [
        "\x1b[92mINFO \x1b[0m:      [ROUND 1/1]",
        "\x1b[91mERROR \x1b[0m:     Simulation raised an exception",
        "RuntimeError: pretrain: no round had a valid site update",
        "\x1b[91mERROR \x1b[0m:     Exit Code: 700",
        "",
        "An unhandled exception occurred when running the simulation.",
    ]
    assert folder.last_exception == "RuntimeError: pretrain: no round had a valid site update"


def test_chained_tracebacks_keep_each_exception_line():
    text = (
        "Traceback (most recent call last):\n  File 'a', line 1\nKeyError: 'x'\n\n"
        "During handling of the above exception, another exception occurred:\n\n"
        "Traceback (most recent call last):\n  File 'b', line 2\n    raise ValueError\nValueError: y\nafter\n"
    )
    folder = TracebackFolder()
    shown = [s for s in (folder.feed(line) for line in text.splitlines(keepends=True)) if s is not None]
    assert "Traceback (most recent call last):" not in shown and shown[-1] == "after"
    assert folder.exceptions == ["KeyError: 'x'", "ValueError: y"] and "ValueError: y" in shown


def test_run_streamed_logs_everything_and_shows_the_folded_output(tmp_path):
    child = "import sys; print('working'); sys.stdout.flush(); raise SystemError('the ServerApp broke')"
    console = io.StringIO()
    result = run_streamed([sys.executable, "-c", child], {}, tmp_path / "logs" / "run.log", console)
    assert result.returncode == 1 and result.last_exception == "SystemError: the ServerApp broke"
    assert console.getvalue() == "working\nSystemError: the ServerApp broke\n"
    log = (tmp_path / "logs" / "run.log").read_text()
    assert "Traceback (most recent call last):" in log and 'File "<string>", line 1' in log
    quiet = run_streamed([sys.executable, "-c", "print('x')"], {}, tmp_path / "logs" / "run.log", None)
    assert quiet.returncode == 0 and (tmp_path / "logs" / "run.log").read_text().endswith("x\n")
