"""The Flower app folder: found from the current folder, or a given one checked before any process starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from endofed.errors import ConfigError
from endofed.launch.simulation import find_app_dir, is_app_dir, require_app_dir

ROOT = Path(__file__).resolve().parents[2]


def test_the_repository_is_the_app_and_is_found_from_below():
    assert is_app_dir(ROOT) and require_app_dir(ROOT) == ROOT
    assert find_app_dir(ROOT / "tests" / "launch") == ROOT


@pytest.mark.parametrize("content", [None, "[project]\nname = 'x'\n", b"\xff\xfe binary"])
def test_a_folder_without_the_app_declaration_is_refused(tmp_path, content):
    if isinstance(content, str):
        (tmp_path / "pyproject.toml").write_text(content)
    elif isinstance(content, bytes):
        (tmp_path / "pyproject.toml").write_bytes(content)
    assert not is_app_dir(tmp_path)
    with pytest.raises(ConfigError, match=r"is not the endofed app folder \(no pyproject.toml with"):
        require_app_dir(tmp_path)
    assert not is_app_dir(tmp_path / "missing")
