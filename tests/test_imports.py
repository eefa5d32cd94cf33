"""Import structure that keeps start-up fast: what ``--help`` and the Flower apps may not load.

Structural, not timed (timings live in ``benchmarks/startup.py``): each check runs in a fresh interpreter and
looks at ``sys.modules``. ``endofed --help`` must not pay for torch, MONAI or Flower; the ClientApp (a fresh
process per Flower message in deployment) must not load MONAI unless a case has to be preprocessed; the
ServerApp needs neither MONAI nor the site-side training code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "monai", "flwr")

# Prints, for every entry point and every (nested) subcommand, the heavy modules loaded by printing its --help.
_HELP_SCRIPT = """
import argparse, contextlib, io, json, sys
from endofed.cli import client, main, server, sim

def commands(parser, prefix):
    yield prefix
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, [*prefix, name])

report = {}
for prog, module in (("endofed", main), ("endofed-server", server), ("endofed-client", client), ("endofed-sim", sim)):
    for argv in commands(module.build_parser(), []):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            try:
                code = module.main([*argv, "--help"])
            except SystemExit as exc:
                code = exc.code
        report[" ".join([prog, *argv])] = {"code": code, "usage": out.getvalue().startswith("usage:")}
report["loaded"] = sorted({name.split(".")[0] for name in sys.modules} & set(HEAVY))
print(json.dumps(report))
"""


def _python(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter at the repository root (the Flower app's import path)."""
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def _loaded_after(statement: str, modules: tuple[str, ...]) -> list[str]:
    """Which of ``modules`` (exact names or packages) are in ``sys.modules`` after running ``statement``."""
    probe = f"import json, sys\n{statement}\nprint(json.dumps(sorted(m for m in {modules!r} if m in sys.modules)))"
    result = _python(probe)
    assert result.returncode == 0, result.stderr[-3000:]
    return list(json.loads(result.stdout.strip().splitlines()[-1]))


def test_every_help_loads_neither_torch_monai_nor_flower():
    result = _python(f"HEAVY = {HEAVY!r}\n{_HELP_SCRIPT}")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    loaded = report.pop("loaded")
    expected = {"endofed", "endofed data", "endofed data check", "endofed compare", "endofed config show",
                "endofed-server", "endofed-client", "endofed-sim"}  # fmt: skip
    assert expected <= set(report)
    assert {cmd: r for cmd, r in report.items() if r != {"code": 0, "usage": True}} == {}
    assert loaded == []


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["nosuch"], 2, "endofed: error: argument COMMAND: invalid choice: 'nosuch'"),
        (["data", "check"], 2, "endofed data check: error: the following arguments are required: --site"),
        (["data", "check", "--site", "/nonexistent/site.yaml"], 1, "endofed: error: "),
    ],
)
def test_bad_input_is_one_line_and_a_non_zero_exit(argv, code, message):
    result = _python(f"import sys\nfrom endofed.cli.main import main\nsys.exit(main({argv!r}))")
    assert result.returncode == code, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr
    assert lines[-1].startswith(message) and sum(line.startswith(("endofed", "usage")) for line in lines) <= 2


def test_client_app_does_not_load_monai():
    """Preprocessing (MONAI) is imported on a cache miss only, not by the ClientApp's start-up."""
    assert _loaded_after("import client.app", ("monai", "endofed.data.preprocess")) == []


def test_server_app_loads_neither_monai_nor_the_training_code():
    assert _loaded_after("import server.app", ("monai", "endofed.data.preprocess", "endofed.training")) == []
