"""The simulation engine's settings: how many sites run at once, the object-store bound, the environment."""

from __future__ import annotations

import pytest

from endofed.config import THREADS_ENV
from endofed.errors import ConfigError
from endofed.launch.simulation import OBJECT_STORE_ENV, engine_env, object_store_env, simulation_parallel


@pytest.mark.parametrize(
    ("sites", "cpus_per_site", "cores", "expected"),
    [
        (100, 1.0, 2, 2),  # 2 slots of 1 CPU
        (100, 0.5, 2, 4),  # half a CPU each: 4 slots
        (3, 0.5, 16, 3),  # more slots than sites: every site
        (10, 4.0, 2, 1),  # a share above the machine: still one at a time
        (10, 1.5, 4, 2),  # 4 / 1.5 = 2.67 -> 2 whole slots
        (5, 0.0, 2, 5),  # no CPU share asked: Ray does not bound them
    ],
)
def test_parallel_sites_are_the_whole_cpu_slots_bounded_by_the_sites(sites, cpus_per_site, cores, expected):
    assert simulation_parallel(sites, cpus_per_site, cores) == expected


def test_object_store_bound_is_in_bytes_and_zero_leaves_rays_default():
    assert object_store_env(2048) == {OBJECT_STORE_ENV: "2048000000"}
    assert object_store_env(400) == {OBJECT_STORE_ENV: "400000000"}
    assert object_store_env(0) == {}


def test_a_negative_object_store_bound_is_one_clear_error():
    with pytest.raises(ConfigError, match="object store bound must be >= 0 MB.*got -1"):
        object_store_env(-1)


def test_engine_defaults_fill_what_the_user_did_not_set():
    env = engine_env({"PATH": "/bin"}, 2.0, 300)
    assert env == {"PATH": "/bin", THREADS_ENV: "2", OBJECT_STORE_ENV: "300000000"}


def test_a_users_own_engine_settings_win():
    mine = {THREADS_ENV: "7", OBJECT_STORE_ENV: "123"}
    assert engine_env(mine, 1.0, 2048) == mine
    assert engine_env({}, 0.5, 0) == {THREADS_ENV: "1"}  # a fractional share still gets one thread; no bound
