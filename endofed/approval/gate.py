"""The site's gate in front of Flower's ClientApp: a SuperExec and a ClientApp runner that check the bundle first.

Flower glue (see :mod:`endofed.approval` for why this mechanism). Two roles of one module, both run with the
site's installed endofed, never with code from a bundle:

- ``superexec``: Flower's ``run_superexec`` loop (``flwr/supercore/superexec/run_superexec.py``) against the
  Runtime API of a ``flower-supernode --isolation process``, with an executor that starts ClientApp tasks as
  the ``clientapp`` role below instead of ``flwr-clientapp`` and refuses every other kind of task.
- ``clientapp``: Flower's ``run_clientapp`` (``flwr/supernode/runtime/run_clientapp.py``) with its
  ``pull_task_input`` step wrapped: the bundle's bytes are hashed and compared with ``--approved`` before
  ``install_from_fab`` unpacks them. An approved bundle continues on Flower's path unchanged (endofed's own
  modules are dropped from ``sys.modules`` first, so the ClientApp imports the bundle's copy, as it does under
  ``flwr-clientapp``). A refused one gets one line appended to ``--site-log``, an error reply with code
  :data:`~endofed.approval.bundle.NOT_APPROVED`, its task finished as failed, and exit code 3.

Both hooks replace one module attribute of Flower 1.42 (``run_superexec.get_executor`` and
``run_clientapp.pull_task_input``); :func:`_hook` refuses to start if the attribute is gone, so a Flower that
moved them stops the site instead of running unchecked code. Flower is imported inside the functions only: the
launcher imports :func:`gate_command` without loading it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from endofed.approval.bundle import NOT_APPROVED, refusal_cause, refusal_line, refusal_reason, sha256_hex

MODULE = "endofed.approval.gate"
EXIT_REFUSED = 3  # the exit code of a ClientApp process whose bundle was refused


def gate_command(role: str) -> list[str]:
    """The command line that starts ``role`` (``superexec`` or ``clientapp``) with this interpreter.

    The current folder is kept off ``sys.path`` (``-P``; ``-I`` before Python 3.11), so the gate is the
    installed endofed, whatever folder the site runs from.
    """
    isolation = "-P" if sys.version_info >= (3, 11) else "-I"
    return [sys.executable, isolation, "-m", MODULE, role]


def _hook(module: Any, name: str, replacement: Callable[..., Any]) -> Callable[..., Any]:
    """Replace ``module.name`` and return the original; a missing attribute stops the gate (fail closed)."""
    original = getattr(module, name, None)
    if not callable(original):
        raise SystemExit(f"endofed approval: {module.__name__}.{name} not found; this Flower is not 1.42")
    setattr(module, name, replacement)
    return original


def _forget_endofed() -> None:
    """Drop endofed's modules from ``sys.modules``, so the ClientApp imports the ones its bundle ships."""
    for name in [n for n in sys.modules if n == "endofed" or n.startswith("endofed.")]:
        del sys.modules[name]


def append_line(path: Path, line: str) -> None:
    """Append one time-stamped line to the site log (created if needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    with path.open("a", encoding="utf-8") as handle:
        handle.write(f"{stamp} {line}\n")


class _Refused(BaseException):
    """Ends ``run_clientapp`` after a refusal.

    A ``BaseException``, so that Flower's ``except Exception`` (which would log a traceback and send a second
    reply) lets it through.
    """


def run_gate_clientapp(args: argparse.Namespace) -> int:
    """Run one ClientApp task through Flower's ``run_clientapp``, checking its bundle before anything else."""
    from flwr.app import Message
    from flwr.app.error import Error
    from flwr.common.constant import SubStatus
    from flwr.supernode.runtime import run_clientapp as flower

    approved = frozenset(args.approved)
    site_log = Path(args.site_log)

    def checked_pull_task_input(client: Any) -> tuple[Any, Any, Any, Any]:
        message, context, run, fab = original(client)
        cause = refusal_cause(fab.content, (fab.hash_str, run.fab_hash), approved)
        if cause is None:
            _forget_endofed()
            return message, context, run, fab
        actual = sha256_hex(fab.content)
        append_line(site_log, refusal_line(actual, run.run_id, f"{run.fab_id} {run.fab_version}", cause))
        reason = refusal_reason(actual)
        try:
            flower.push_message(client, Message(Error(code=NOT_APPROVED, reason=reason), reply_to=message), context)
        finally:  # the task ends failed and the site's context stays as it was (context=None)
            flower.push_task_output(client, context=None, sub_status=SubStatus.FAILED, details=reason)
        raise _Refused

    original = _hook(flower, "pull_task_input", checked_pull_task_input)
    try:
        flower.run_clientapp(
            runtime_api_address=args.runtime_api_address,
            token=args.token,
            insecure=True,
            certificates=None,
            parent_pid=args.parent_pid,
            runtime_dependency_install=False,
        )
    except _Refused:
        return EXIT_REFUSED
    return 0  # run_clientapp normally ends the process itself (flwr_exit)


def _gate_executor(site_log: str, approved: Sequence[str]) -> Any:
    """A Flower executor that starts ClientApp tasks as the gate's ``clientapp`` role and refuses the rest."""
    from flwr.supercore.constant import TaskType
    from flwr.supercore.superexec.executor.subprocess_executor import SubprocessExecutor
    from flwr.supercore.superexec.executor.types import ExecutionSpec, LaunchResult

    class GateExecutor(SubprocessExecutor):
        """Flower's subprocess executor with endofed's bundle check in front of every ClientApp."""

        def launch(self, spec: ExecutionSpec) -> LaunchResult:
            if spec.task_type != TaskType.CLIENT_APP:
                return LaunchResult.failed(f"endofed's site gate runs ClientApp tasks only, not {spec.task_type}")
            command = [*gate_command("clientapp"), "--site-log", site_log, "--approved", ",".join(approved),
                       "--runtime-api-address", spec.runtime_api_address, "--token", spec.token]  # fmt: skip
            if spec.parent_pid is not None:
                command += ["--parent-pid", str(spec.parent_pid)]
            subprocess.Popen(command)  # noqa: S603 - our own command line; output goes to the SuperExec's log
            return LaunchResult.accepted()

    return GateExecutor()


def run_gate_superexec(args: argparse.Namespace) -> int:
    """Flower's SuperExec loop with the gate's executor, against the SuperNode's Runtime API on 127.0.0.1."""
    from flwr.supercore.auth import load_superexec_auth_secret
    from flwr.supercore.superexec import run_superexec as flower

    executor = _gate_executor(args.site_log, args.approved)
    _hook(flower, "get_executor", lambda *_args, **_kwargs: executor)
    flower.run_superexec(
        runtime_api_address=args.runtime_api_address,
        insecure=True,  # the Runtime API is the SuperNode's, on 127.0.0.1, as with --isolation subprocess
        superexec_auth_secret=load_superexec_auth_secret(args.superexec_auth_secret_file),
        parent_pid=args.parent_pid,
        runtime_dependency_install=False,
    )
    return 0


def _hashes(text: str) -> tuple[str, ...]:
    """``--approved``: comma-separated hashes (empty: approve nothing)."""
    return tuple(h for h in text.split(",") if h)


def build_parser() -> argparse.ArgumentParser:
    """The gate's arguments (started by ``endofed-client`` and by the gate's SuperExec, not by people)."""
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description="endofed's site code approval gate")
    roles = parser.add_subparsers(dest="role", required=True)
    for role in ("superexec", "clientapp"):
        sub = roles.add_parser(role)
        sub.add_argument("--site-log", required=True, help="the site log that gets a refusal's one line")
        sub.add_argument("--approved", required=True, type=_hashes, help="approved bundle hashes, comma-separated")
        sub.add_argument("--runtime-api-address", required=True, help="the SuperNode's Runtime API host:port")
        sub.add_argument("--parent-pid", type=int, default=None, help="exit when this process ends")
    roles.choices["superexec"].add_argument("--superexec-auth-secret-file", default=None)
    roles.choices["clientapp"].add_argument("--token", required=True, help="the task token from the Runtime API")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m endofed.approval.gate ROLE``."""
    args = build_parser().parse_args(argv)
    if args.role == "superexec":
        return run_gate_superexec(args)
    return run_gate_clientapp(args)


if __name__ == "__main__":
    sys.exit(main())
