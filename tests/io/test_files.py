"""special_file: what readers of user-given files refuse before opening (a read of a FIFO blocks for ever)."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest

from endofed.io import files
from endofed.io.files import LOW_SPACE_BYTES, free_bytes, special_file, writing


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


def test_writing_names_the_file_of_an_os_error_that_names_none(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "out.npy"
    with pytest.raises(OSError) as info, writing(target):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert info.value.filename == str(target) and info.value.errno == errno.ENOSPC
    with pytest.raises(OSError) as info, writing(target):
        raise OSError(errno.EROFS, "Read-only file system", "/elsewhere")
    assert info.value.filename == "/elsewhere"  # already named: kept


def test_a_short_write_without_errno_is_a_full_disk_only_when_space_is_low(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "out.npy"
    for free, code in ((1000, errno.ENOSPC), (10 * LOW_SPACE_BYTES, errno.EIO)):
        monkeypatch.setattr(files, "free_bytes", lambda _path, free=free: free)
        with pytest.raises(OSError) as info, writing(target):
            raise OSError("16384 requested and 16352 written")
        assert info.value.errno == code and info.value.filename == str(target)


def test_free_bytes_looks_at_the_nearest_existing_folder(tmp_path: Path) -> None:
    assert free_bytes(tmp_path / "not" / "yet" / "there") == shutil.disk_usage(tmp_path).free
