"""Paths handed to Flower's ``key=value`` parser (``--node-config``, ``--run-config``) arrive unchanged."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from flwr.common.config import parse_config_args

from endofed.config import SiteConfig
from endofed.errors import ConfigError
from endofed.federated.runconfig import NODE_SITE_CONFIG, site_config_path
from endofed.launch.deployment import supernode_command
from endofed.launch.flwr import check_round_trip, key_values, toml_string, write_connection

HOSTILE_PATHS = [
    "/sites/plain/site.yaml",
    '/sites/"quoted"/site.yaml',
    "/sites/it's/site.yaml",
    """/sites/both ' and "/site.yaml""",
    "/sites/with space/and  two/site.yaml",
    "/sites/back\\slash\\n\\t\\u0041/site.yaml",  # TOML escapes that must not be applied
    "/sites/trailing-backslash\\",
    "/sites/key=value a=b/site.yaml",
    "/sites/Zürich Hôpital/東京/site.yaml",
    "/sites/tab\tand\nnewline/site.yaml",
    "/sites/settings.toml",
    "~/not-expanded/site.yaml",
    "/sites/$HOME/`cmd`/site.yaml",
]


def test_toml_basic_strings_by_hand():
    assert toml_string("a") == '"a"'
    assert toml_string('say "hi"') == '"say \\u0022hi\\u0022"'  # never a raw quote: Flower's regex stops there
    assert toml_string("C:\\data") == '"C:\\\\data"'
    assert toml_string("a\tb\n\x7f") == '"a\\u0009b\\u000a\\u007f"'
    assert toml_string("Zürich 'x' = y") == "\"Zürich 'x' = y\""


@pytest.mark.parametrize("path", HOSTILE_PATHS)
def test_any_path_survives_the_node_config_parser_of_flower(path):
    text = key_values({NODE_SITE_CONFIG: path})
    assert parse_config_args([text]) == {NODE_SITE_CONFIG: path}
    assert site_config_path(parse_config_args([text]), {}) == Path(path)  # what the ClientApp reads back


def test_the_old_quoting_lost_such_paths():
    """What ``site-config="<path>"`` did before (kept as the reason for the escaping)."""
    assert parse_config_args(['site-config="/sites/"quoted"/site.yaml"']) == {"site-config": "/sites/"}
    assert parse_config_args(['site-config="/sites/a\\new"']) == {"site-config": "/sites/a\new"}  # a newline
    with pytest.raises(click.ClickException):  # '\\s' is no TOML escape: the SuperNode died at start-up
        parse_config_args(['site-config="/sites/back\\slash"'])


def test_several_values_in_one_run_config_all_survive():
    items = {"config-path": '/exp/"a" b.yaml', "config-overrides": "x.y=1; z='w'", "output-dir": "C:\\runs\\",
             "resume": True, "num": 3, "share": 0.5, "cpus": 2.0}  # fmt: skip
    parsed = parse_config_args([key_values(items)])
    assert parsed == {**items, "cpus": 2}


def test_what_flower_cannot_carry_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        key_values({NODE_SITE_CONFIG: "/sites/\udcff/site.yaml"})  # an undecodable byte in a file name
    with pytest.raises(ConfigError, match="would reach Flower as"):
        check_round_trip('site-config="/a/"b"', {"site-config": '/a/"b'})
    with pytest.raises(ValueError, match="config key"):
        key_values({"two words": "x"})


def test_the_supernode_command_carries_the_resolved_site_yaml(tmp_path):
    folder = tmp_path / 'it\'s a "site" = x\\y'
    folder.mkdir()
    (folder / "site.yaml").write_text("site_id: h1\n")
    site = SiteConfig(root_certificates=tmp_path / "ca.crt", private_key=tmp_path / "key")
    command = supernode_command(site, folder / "site.yaml", 9999)
    node_config = command[command.index("--node-config") + 1]
    assert parse_config_args([node_config]) == {NODE_SITE_CONFIG: str((folder / "site.yaml").resolve())}


@pytest.mark.parametrize("value", [3, "", "  ", True])
def test_a_node_config_value_that_is_not_a_path_is_one_clear_error(value):
    with pytest.raises(ConfigError, match="must be the site YAML's path"):
        site_config_path({NODE_SITE_CONFIG: value}, {})


@pytest.mark.parametrize("path", HOSTILE_PATHS)
def test_the_connection_file_holds_any_ca_path(tmp_path, path):
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads(write_connection(tmp_path, "c", "127.0.0.1:9092", Path(path)).read_text(encoding="utf-8"))
    assert config["superlink"]["c"]["root-certificates"] == path


@pytest.mark.parametrize(
    "text",
    [
        'site-config="/a/b c.yaml"',
        "a=1 b='x y' c=\"z\" d=true e=0.5",
        'site-config="/sites/"quoted"/site.yaml"',  # cut short by Flower: the emulation must cut it the same
        'k="\\u0022 and \\\\ back"',
    ],
)
def test_the_librarys_restatement_of_flowers_parser_agrees_with_flower(text):
    from endofed.launch.flwr import parse_like_flower

    assert parse_like_flower(text) == parse_config_args([text])


def test_every_run_config_key_the_launchers_send_is_declared_in_the_app():
    """Flower refuses a run config with an undeclared key ("Invalid run configuration", code 15)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    from endofed.federated import runconfig
    from tests.helpers import ROOT

    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"])
    sent = {runconfig.CONFIG_PATH, runconfig.CONFIG_OVERRIDES, runconfig.SITE_CONFIGS, runconfig.OUTPUT_DIR,
            runconfig.RUN_KEY, runconfig.RESUME, runconfig.SOURCE_DESCRIBE}  # fmt: skip
    assert sent <= declared, sent - declared
