"""The one CLI boundary: every exception becomes one line and a non-zero exit; a bug's traceback goes to a log."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from endofed.cli.common import EXIT_FAILED, EXIT_INTERRUPTED, LOG_DIR_ENV, error_line, run_command
from endofed.errors import MAX_MESSAGE_CHARS, ConfigError, describe_os_error, shorten, symlink_loop_path


def test_shorten_keeps_short_text_and_cuts_the_middle_of_long_text():
    assert shorten("a\nb   c") == "a b c"
    assert shorten("x" * 10, limit=10) == "x" * 10
    cut = shorten("HEAD" + "m" * 1000 + "TAIL", limit=40)
    assert len(cut) == 40 and cut.startswith("HEAD") and cut.endswith("TAIL") and " ... " in cut


@pytest.mark.parametrize(
    ("exc", "line"),
    [
        (OSError(errno.EROFS, "Read-only file system", "/w"), "/w: read-only file system"),
        (OSError(errno.ENOSPC, "No space left on device", "/w/c"), "/w/c: no space left on the device"),
        (OSError(errno.EACCES, "Permission denied", "/etc/k"), "/etc/k: permission denied"),
        (OSError(errno.ELOOP, "Too many levels", "/a"), "/a: symbolic link loop"),
        (OSError(errno.EXDEV, "Invalid cross-device link", "/a", None, "/b"), "/a -> /b: invalid cross-device link"),
        (OSError(errno.ENOSPC, "No space left on device"), "no space left on the device"),
        (OSError("plain message"), "plain message"),
    ],
)
def test_os_errors_name_the_path_and_the_cause(exc, line):
    assert describe_os_error(exc) == line


def test_pathlib_symlink_loop_is_recognised():
    assert symlink_loop_path(RuntimeError("Symlink loop from '/tmp/a/loop'")) == "/tmp/a/loop"
    assert symlink_loop_path(RuntimeError("something else")) is None


def _raise(exc: BaseException):
    def func() -> int:
        raise exc

    return func


def test_user_errors_are_one_line_without_a_log(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(LOG_DIR_ENV, str(tmp_path / "logs"))
    assert run_command(_raise(ConfigError("bad value\nfor data.roi_size " + "9" * 5000))) == EXIT_FAILED
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("endofed: error: bad value for data.roi_size 999")
    assert len(err) <= len("endofed: error: \n") + MAX_MESSAGE_CHARS
    assert not (tmp_path / "logs").exists()


def test_unexpected_errors_write_the_traceback_to_a_log_not_the_console(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(LOG_DIR_ENV, str(tmp_path / "logs"))
    assert run_command(_raise(KeyError("model.blocks.0"))) == EXIT_FAILED
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1
    assert err.startswith("endofed: error: unexpected KeyError: 'model.blocks.0'; details in ")
    log = Path(err.strip().rsplit("details in ", 1)[1])
    assert log.parent == tmp_path / "logs"
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "KeyError: 'model.blocks.0'" in text


def test_memory_errors_say_out_of_memory(tmp_path, monkeypatch):
    monkeypatch.setenv(LOG_DIR_ENV, str(tmp_path))
    assert error_line(MemoryError("Unable to allocate 728. TiB")).startswith("out of memory: Unable to allocate 728")


def test_log_falls_back_to_the_temp_folder_when_the_log_folder_cannot_be_written(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv(LOG_DIR_ENV, str(blocker / "logs"))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    line = error_line(ZeroDivisionError("division by zero"))
    assert f"details in {tmp_path / 'tmp'}" in line


def test_interrupt_and_file_system_errors(capsys):
    assert run_command(_raise(KeyboardInterrupt())) == EXIT_INTERRUPTED
    assert run_command(_raise(OSError(errno.EROFS, "x", "/ro/w"))) == EXIT_FAILED
    assert run_command(_raise(RuntimeError("Symlink loop from '/l'"))) == EXIT_FAILED
    err = capsys.readouterr().err.splitlines()
    assert err == ["endofed: interrupted", "endofed: error: /ro/w: read-only file system",
                   "endofed: error: /l: symbolic link loop"]  # fmt: skip
