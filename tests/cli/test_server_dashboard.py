"""endofed-server --dashboard: the token comes from a file named in the server config, never the run folder."""

from __future__ import annotations

import pytest

from endofed.cli.server import dashboard_beside, dashboard_token
from endofed.config import load_server_config
from endofed.errors import ConfigError


def test_the_token_is_read_from_its_file_and_a_missing_or_empty_one_is_one_error(tmp_path):
    assert dashboard_token(None) == ""
    token_file = tmp_path / "dashboard.token"
    token_file.write_text("s3cret\n")
    assert dashboard_token(token_file) == "s3cret"
    token_file.write_text("  \n")
    with pytest.raises(ConfigError, match="is empty"):
        dashboard_token(token_file)
    with pytest.raises(ConfigError, match="cannot be read"):
        dashboard_token(tmp_path / "absent")


def test_beyond_loopback_without_a_token_nothing_starts(tmp_path):
    with pytest.raises(ConfigError, match="needs dashboard_token_file"):
        with dashboard_beside(tmp_path, 8050, "0.0.0.0", ""):
            pytest.fail("the block must not run")
    with dashboard_beside(tmp_path, None, "0.0.0.0", ""):  # --dashboard not given: nothing to check or start
        pass


def test_the_server_yaml_names_the_token_file_relative_to_itself(tmp_path):
    (tmp_path / "server.yaml").write_text("dashboard_host: 0.0.0.0\ndashboard_token_file: secrets/dashboard.token\n")
    server = load_server_config(tmp_path / "server.yaml")
    assert server.dashboard_host == "0.0.0.0" and server.dashboard_token_file == tmp_path / "secrets/dashboard.token"
