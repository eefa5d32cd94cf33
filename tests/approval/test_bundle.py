"""Bundle hashes (hand-computed on a tiny app and equal to Flower's), the ``approved_apps`` key, the CLI."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest
import yaml

from endofed.approval.bundle import bundle_hash, check_hash_list, refusal_cause, refusal_line, refusal_reason
from endofed.cli.main import main
from endofed.config import SiteConfig, load_site_config
from endofed.errors import ConfigError

# Already in the form tomli_w writes, so the bundle's pyproject.toml has these very bytes.
PYPROJECT = b"""[project]
name = "tinyapp"
version = "1.0.0"

[tool.flwr.app]
publisher = "me"

[tool.flwr.app.components]
serverapp = "tinyapp.server:app"
clientapp = "tinyapp.client:app"
"""
FILES = {"tinyapp/client.py": b"x = 1\n", "tinyapp/server.py": b"y = 2\n"}


def tiny_app(root: Path) -> Path:
    (root / "tinyapp").mkdir(parents=True)
    (root / "pyproject.toml").write_bytes(PYPROJECT)
    for name, data in FILES.items():
        (root / name).write_bytes(data)
    return root


def hand_built_fab() -> bytes:
    """The FAB format of Flower 1.42 written out: stored zip entries dated 2024-10-01, pyproject.toml first, the
    other files sorted, then .info/CONTENT with one 'path,sha256,size in bits' line per file."""
    entries = [("pyproject.toml", PYPROJECT), *sorted(FILES.items())]
    content = "\n".join(f"{name},{hashlib.sha256(data).hexdigest()},{8 * len(data)}" for name, data in entries)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as fab:
        for name, data in [*entries, (".info/CONTENT", content.encode())]:
            fab.writestr(zipfile.ZipInfo(name, date_time=(2024, 10, 1, 0, 0, 0)), data)
    return buffer.getvalue()


def test_the_hash_is_the_sha256_of_the_hand_built_bundle_and_of_flowers_own(tmp_path):
    from flwr.cli.build import build_fab_from_disk

    app = tiny_app(tmp_path / "app")
    expected = hashlib.sha256(hand_built_fab()).hexdigest()
    assert bundle_hash(app) == expected
    assert hashlib.sha256(build_fab_from_disk(app)).hexdigest() == expected  # what flwr run computes and sends


def test_one_changed_byte_of_a_shipped_file_changes_the_hash_and_unshipped_files_do_not(tmp_path):
    app = tiny_app(tmp_path / "app")
    before = bundle_hash(app)
    (app / "notes.txt").write_text("not shipped: .txt is not a bundle file type\n")
    (app / "tinyapp" / "__pycache__").mkdir()
    (app / "tinyapp" / "__pycache__" / "client.cpython-311.pyc").write_bytes(b"\0")
    assert bundle_hash(app) == before
    (app / "tinyapp" / "client.py").write_bytes(b"x = 2\n")
    assert bundle_hash(app) != before


@pytest.mark.parametrize("folder", ["missing", "empty"])
def test_a_folder_that_is_no_app_is_one_clear_error(tmp_path, folder):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="app folder not found|not a Flower app folder"):
        bundle_hash(tmp_path / folder)


def test_refusal_cause_checks_the_content_and_the_claimed_hashes():
    content = b"a bundle"
    actual = hashlib.sha256(content).hexdigest()
    assert refusal_cause(content, (actual, actual), {actual}) is None
    assert refusal_cause(content, (actual,), set()) == "its sha256 is not in approved_apps"
    assert refusal_cause(b"another bundle", (actual,), {actual}) == "its sha256 is not in approved_apps"
    other = "0" * 64
    assert "not the hash of its content" in str(refusal_cause(content, (other, actual), {actual, other}))


def test_the_refusal_texts_are_one_line_and_carry_no_site_information():
    line = refusal_line("ab" * 32, 7, "endofed/endofed 0.1.0", "its sha256 is not in approved_apps")
    reason = refusal_reason("ab" * 32)
    assert "\n" not in line and "\n" not in reason
    assert reason.startswith("endofed 110: ") and "ab" * 32 in reason


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["A" * 64], "64 lower-case hex digits"),
        (["a" * 63], "64 lower-case hex digits"),
        (["g" * 64], "64 lower-case hex digits"),
        ([" " + "a" * 64], "64 lower-case hex digits"),
        (["a" * 64, "a" * 64], "twice"),
    ],
)
def test_approved_apps_entries_must_be_distinct_sha256_hex(values, message):
    with pytest.raises(ConfigError, match=message):
        check_hash_list(values, "site.approved_apps")
    with pytest.raises(ConfigError, match=r"site\.approved_apps\["):
        SiteConfig(approved_apps=tuple(values))


def test_approved_apps_is_optional_and_read_from_the_site_yaml(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump({"site_id": "a"}))
    assert load_site_config(path).approved_apps is None  # no list: any bundle runs (no gate)
    path.write_text(yaml.safe_dump({"site_id": "a", "approved_apps": []}))
    assert load_site_config(path).approved_apps == ()  # an empty list: no bundle runs
    path.write_text(yaml.safe_dump({"site_id": "a", "approved_apps": ["b" * 64, "c" * 64]}))
    assert load_site_config(path).approved_apps == ("b" * 64, "c" * 64)
    path.write_text(yaml.safe_dump({"site_id": "a", "approved_apps": "b" * 64}))
    with pytest.raises(ConfigError, match="must be a list"):
        load_site_config(path)


def test_endofed_app_hash_prints_the_hash_and_fails_in_one_line(tmp_path, capsys):
    app = tiny_app(tmp_path / "app")
    assert main(["app", "hash", str(app)]) == 0
    assert capsys.readouterr().out == hashlib.sha256(hand_built_fab()).hexdigest() + "\n"
    assert main(["app", "hash", str(tmp_path / "nothing")]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"endofed: error: app folder not found: {tmp_path / 'nothing'}"]
