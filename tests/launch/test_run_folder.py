"""A run's folder (launch record, refusal to overwrite, what --resume reads) and the SuperNode restart waits."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from endofed.config import ServerConfig, load_server_config
from endofed.errors import ConfigError
from endofed.launch.deployment import retry_wait
from endofed.launch.run_record import Launch, new_run_key, read_launch, write_launch


def test_supernode_restarts_wait_5_s_six_times_then_double_up_to_a_minute():
    assert [retry_wait(a) for a in range(10)] == [5, 5, 5, 5, 5, 5, 10, 20, 40, 60]
    assert retry_wait(10_000) == 60


def test_run_keys_are_safe_folder_names_and_unique():
    key = new_run_key(Path("/runs/Hospital run #3 (final)"))
    assert re.fullmatch(r"Hospital-run-3-final-[0-9a-f]{8}", key)
    assert new_run_key(Path("/runs/x")) != new_run_key(Path("/runs/x"))
    assert re.fullmatch(r"run-[0-9a-f]{8}", new_run_key(Path("/runs/###")))


def test_a_run_folder_records_its_launch_refuses_a_second_run_and_reads_back(tmp_path):
    (tmp_path / "server.yaml").write_text(
        "port: 9300\nsite_public_keys: [keys/a.pub]\nexperiment: configs/tiny.yaml\noutput_dir: out\n"
    )
    server = load_server_config(tmp_path / "server.yaml")
    launch = Launch(server, ("federation.pretrain_rounds=3",), "out-0123abcd")
    write_launch(launch)
    assert read_launch(tmp_path / "out") == launch  # paths, tuples and overrides come back exactly
    with pytest.raises(ConfigError, match="already holds a run .* --resume"):
        write_launch(launch)
    with pytest.raises(ConfigError, match="holds no endofed-server run"):
        read_launch(tmp_path / "elsewhere")
    (tmp_path / "out" / "launch.json").write_text("{not json")
    with pytest.raises(ConfigError, match="is not a valid run record"):
        read_launch(tmp_path / "out")
    assert isinstance(server, ServerConfig)
