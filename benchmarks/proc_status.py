"""Process facts from Linux's /proc for the benchmarks (command line, memory fields, the process tree)."""

from __future__ import annotations

from pathlib import Path


def argv_of(pid: int) -> list[str]:
    """The command line of ``pid`` ([] if it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def status_bytes(pid: int, field: str) -> int:
    """A ``kB`` field of ``/proc/PID/status`` (``VmRSS``, ``VmHWM``) in bytes; 0 if the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def children() -> dict[int, list[int]]:
    """Parent PID -> child PIDs of every process."""
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def descendants(pid: int, tree: dict[int, list[int]]) -> list[int]:
    """Every descendant of ``pid``."""
    found, todo = [], list(tree.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo += tree.get(child, [])
    return found


def is_program(pid: int, names: tuple[str, ...]) -> bool:
    """Whether ``pid`` runs one of the console scripts ``names`` (as argv[0] or as the script after python)."""
    return any(Path(part).name in names for part in argv_of(pid)[:2])
