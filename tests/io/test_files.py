"""special_file: what readers of user-given files refuse before opening (a read of a FIFO blocks for ever)."""

from __future__ import annotations

import os
from pathlib import Path

from endofed.io.files import special_file


def test_regular_files_and_missing_paths_are_not_special(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("x")
    (tmp_path / "link.csv").symlink_to(tmp_path / "a.csv")
    assert not special_file(tmp_path / "a.csv") and not special_file(tmp_path / "link.csv")
    assert not special_file(tmp_path / "missing.csv")  # the reader's own "missing" error says it better


def test_folders_fifos_and_devices_are_special(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "pipe-link").symlink_to(tmp_path / "pipe")
    assert special_file(tmp_path) and special_file(tmp_path / "pipe") and special_file(tmp_path / "pipe-link")
    assert special_file(Path("/dev/zero"))
