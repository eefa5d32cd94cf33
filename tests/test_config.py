from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from endofed.config import (
    DataConfig,
    ExperimentConfig,
    ModelConfig,
    apply_overrides,
    load_config,
    load_site_config,
    to_dict,
)
from endofed.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_defaults_are_valid_and_frozen():
    cfg = ExperimentConfig()
    assert cfg.data.roi_size == (128, 128, 32)
    assert cfg.pretrain.mask_mode == "independent"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 3  # type: ignore[misc]


@pytest.mark.parametrize("name", ["tiny.yaml", "default.yaml", "cpu.yaml"])
def test_shipped_configs_load(name):
    cfg = load_config(CONFIGS / name)
    assert isinstance(cfg.data.roi_size, tuple)
    assert all(r % p == 0 for r, p in zip(cfg.data.roi_size, cfg.model.patch_size, strict=True))


def test_tiny_overrides_only_what_it_says():
    cfg = load_config(CONFIGS / "tiny.yaml")
    assert cfg.data.roi_size == (64, 64, 16)
    assert cfg.data.norm_percentiles == DataConfig().norm_percentiles  # not in tiny.yaml -> default


def test_every_field_has_a_default_and_a_comment():
    import inspect

    import endofed.config as module

    for cls in (
        module.DataConfig,
        module.ModelConfig,
        module.PretrainConfig,
        module.FinetuneConfig,
        module.FederationConfig,
        module.ExperimentConfig,
        module.SiteConfig,
        module.ServerConfig,
    ):
        source = inspect.getsource(cls)
        for field in dataclasses.fields(cls):
            assert field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING
            lines = [ln for ln in source.splitlines() if ln.strip().startswith(f"{field.name}:")]
            assert lines and all("#" in ln for ln in lines), f"{cls.__name__}.{field.name} lacks a comment"


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("data:\n  roi_sise: [1, 2, 3]\n", "unknown config key 'data.roi_sise' (did you mean 'roi_size'?)"),
        ("dta:\n  roi_size: [1, 2, 3]\n", "unknown config key 'dta' (did you mean 'data'?)"),
        ("data:\n  roi_size: [64, 64]\n", "data.roi_size must be a list of 3 values, got [64, 64]"),
        ("pretrain:\n  mask_ratio: 1.5\n", "pretrain.mask_ratio must be in (0, 1), got 1.5"),
        ("pretrain:\n  mask_mode: random\n", "pretrain.mask_mode must be one of"),
        ("pretrain:\n  epochs: ten\n", "pretrain.epochs must be an integer, got 'ten'"),
        ("data:\n  norm_clip: 1\n", "data.norm_clip must be true or false, got 1"),
        ("federation:\n  strategy: fedsgd\n", "federation.strategy must be one of"),
        ("federation:\n  max_in_flight: -1\n", "max_in_flight must be >= 0 (0 = the default window), got -1"),
        ("data:\n  roi_size: [100, 64, 16]\n", "must be divisible by model.patch_size"),
        ("- 1\n- 2\n", "must hold a mapping"),
        ("data: [1\n", "malformed YAML"),
    ],
)
def test_bad_config_names_the_problem(tmp_path, yaml_text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_malformed_yaml_reports_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("seed: 1\ndata:\n  roi_size: [1, 2\n")
    with pytest.raises(ConfigError, match=r"malformed YAML in .*bad.yaml \(line \d+"):
        load_config(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_overrides_parse_yaml_values_and_win():
    cfg = load_config(CONFIGS / "tiny.yaml", ["data.roi_size=[32, 32, 8]", "seed=7", "pretrain.compile=true"])
    assert cfg.data.roi_size == (32, 32, 8)
    assert cfg.seed == 7
    assert cfg.pretrain.compile is True


def test_apply_overrides_does_not_mutate_input():
    raw = {"data": {"roi_size": [1, 2, 3]}}
    out = apply_overrides(raw, ["data.roi_size=[4, 4, 4]"])
    assert raw == {"data": {"roi_size": [1, 2, 3]}}
    assert out == {"data": {"roi_size": [4, 4, 4]}}


@pytest.mark.parametrize("override", ["noequals", "=3"])
def test_bad_override_syntax(override):
    with pytest.raises(ConfigError, match="override must look like section.key=value"):
        load_config(None, [override])


def test_model_heads_must_divide_width():
    with pytest.raises(ConfigError, match=r"model.embed_dim \(100\) must be divisible by model.num_heads \(12\)"):
        ModelConfig(embed_dim=100)


def test_site_config_resolves_relative_paths(tmp_path):
    (tmp_path / "site.yaml").write_text("site_id: h1\ndata_root: data\nmanifest: data/m.csv\nwork_dir: ../w\n")
    site = load_site_config(tmp_path / "site.yaml")
    assert site.data_root == (tmp_path / "data").resolve()
    assert site.manifest == (tmp_path / "data" / "m.csv").resolve()
    assert site.work_dir == (tmp_path.parent / "w").resolve()
    assert site.private_key is None


def test_example_site_config_in_repo_is_valid():
    site = load_site_config(CONFIGS / "sites" / "example_site.yaml")
    assert site.site_id == "hospital-a"
    assert site.manifest is not None and site.manifest.is_absolute()


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("site_id: 'a b'\n", "site.site_id must be non-empty letters"),
        ("device: gpu\n", "site.device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
        ("server_address: localhost\n", "site.server_address must be host:port with a port from 1 to 65535"),
        ("server_address: 'h:99999'\n", "must be host:port with a port from 1 to 65535, got 'h:99999'"),
        ("server_address: 'h:0'\n", "must be host:port with a port from 1 to 65535, got 'h:0'"),
        ("manifets: m.csv\n", "unknown config key 'site.manifets' (did you mean 'manifest'?)"),
    ],
)
def test_bad_site_config(tmp_path, yaml_text, message):
    path = tmp_path / "site.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as info:
        load_site_config(path)
    assert message in str(info.value)


def test_to_dict_round_trips_through_builder():
    cfg = load_config(CONFIGS / "tiny.yaml")
    from endofed.config import build

    assert build(ExperimentConfig, to_dict(cfg)) == cfg


def test_scientific_notation_without_a_dot_is_a_number_not_a_yaml_string():
    from endofed.config import load_config

    cfg = load_config(None, ["federation.dp_delta=1e-5", "pretrain.lr=2E-4"])
    assert cfg.federation.dp_delta == 1e-5 and cfg.pretrain.lr == 2e-4
    with pytest.raises(ConfigError, match="federation.dp_delta must be a number, got '1e-5x'"):
        load_config(None, ["federation.dp_delta=1e-5x"])


def test_central_dp_needs_a_clipping_norm_and_fp32_and_a_quorum_within_the_sites():
    from endofed.config import FederationConfig

    with pytest.raises(ConfigError, match="dp_clipping_norm must be > 0"):
        FederationConfig(dp_noise_multiplier=1.0)
    with pytest.raises(ConfigError, match="needs federation.transport=fp32"):
        FederationConfig(dp_noise_multiplier=1.0, dp_clipping_norm=1.0, transport="bf16")
    with pytest.raises(ConfigError, match="quorum must be between 0"):
        FederationConfig(min_sites=2, quorum=3)
    assert FederationConfig(min_sites=3, quorum=0).round_quorum == 3


def test_config_imports_neither_torch_nor_flower():
    import subprocess
    import sys

    code = "import sys, endofed.config; print(sorted({'torch', 'flwr', 'numpy'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_config_validates_against_the_one_list_of_mask_modes_and_strategies():
    from endofed.config import FederationConfig, PretrainConfig
    from endofed.federated.strategies import STRATEGIES
    from endofed.ssl.mask_modes import MASK_MODES

    assert [PretrainConfig(mask_mode=mode).mask_mode for mode in MASK_MODES] == list(MASK_MODES)
    assert [FederationConfig(strategy=name).strategy for name in STRATEGIES] == list(STRATEGIES)
    assert FederationConfig(finetune_strategy="same").finetune_strategy == "same"
    with pytest.raises(ConfigError, match=r"one of \('shared', 'independent', 'modality_drop'\), got 'random'"):
        PretrainConfig(mask_mode="random")
    with pytest.raises(ConfigError, match="'same' or one of"):
        FederationConfig(finetune_strategy="fedsgd")


def test_builder_serves_any_dataclass_schema_and_resolves_paths(tmp_path):
    from endofed.config_builder import load_dataclass, resolve_paths

    @dataclasses.dataclass(frozen=True)
    class Schema:
        name: str = "x"  # a string
        keys: tuple[Path, ...] = ()  # any number of paths
        out: Path | None = None  # an optional path

    (tmp_path / "s.yaml").write_text("keys: [a.pub, ../b.pub]\n")
    loaded = load_dataclass(Schema, tmp_path / "s.yaml", ["name=y"], "schema")
    assert loaded == Schema(name="y", keys=(Path("a.pub"), Path("../b.pub")))
    resolved = resolve_paths(loaded, tmp_path, ("keys", "out"))
    assert resolved.keys == ((tmp_path / "a.pub").resolve(), (tmp_path.parent / "b.pub").resolve())
    assert resolved.out is None
    unknown = r"s.yaml \+ --set overrides: unknown config key 'schema.nme' \(did you mean 'name'\?\)"
    with pytest.raises(ConfigError, match=unknown):
        load_dataclass(Schema, tmp_path / "s.yaml", ["nme=z"], "schema")


def test_server_config_resolves_every_path_against_its_yaml(tmp_path):
    from endofed.config import load_server_config

    (tmp_path / "server.yaml").write_text("site_public_keys: [keys/a.pub]\nexperiment: exp.yaml\n")
    server = load_server_config(tmp_path / "server.yaml")
    assert server.site_public_keys == ((tmp_path / "keys" / "a.pub").resolve(),)
    assert server.experiment == (tmp_path / "exp.yaml").resolve()
    assert server.ca_certificate == (tmp_path / "certs" / "ca.crt").resolve() and server.app_dir is None


def test_yaml_aliases_are_refused_but_plain_yaml_and_anchors_load():
    from endofed.config_builder import load_plain_yaml

    assert load_plain_yaml("a: [1, 2]\nb: {c: x}\n") == {"a": [1, 2], "b": {"c": "x"}}
    assert load_plain_yaml("a: &anchor 3\n") == {"a": 3}  # an anchor nobody refers to expands nothing
    with pytest.raises(yaml.YAMLError, match=r"aliases \(\*anchor\) are not allowed"):
        load_plain_yaml("a: &anchor [1]\nb: *anchor\n")
    with pytest.raises(ConfigError, match=r"cannot parse the value of override"):
        apply_overrides({}, ["seed=*anchor"])


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("a: " + "[" * 5000 + "]" * 5000 + "\n", "values nested too deeply"),
        ("seed: 1" + "0" * 5000 + "\n", "a value cannot be read: Exceeds the limit (4300 digits)"),
    ],
)
def test_yaml_beyond_what_python_can_hold_is_one_config_error(tmp_path, text, words):
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ConfigError, match=re.escape(words)):
        load_config(tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match="cannot parse the value of override"):
        load_config(None, [text.strip().replace(": ", "=", 1)])


def test_a_config_file_too_big_to_be_a_config_is_refused_unread(tmp_path):
    from endofed.config_builder import MAX_CONFIG_BYTES

    (tmp_path / "big.yaml").write_text("seed: 1\n" + "#" * MAX_CONFIG_BYTES)
    with pytest.raises(ConfigError, match=r"big.yaml is 1,048,584 bytes, more than a config can need"):
        load_config(tmp_path / "big.yaml")


@pytest.mark.parametrize("spacing", [[float("inf"), 1, 1], [0.0001, 1, 1], [1, 1, 25]])
def test_target_spacing_outside_the_clinical_range_is_refused(spacing):
    with pytest.raises(ConfigError, match="data.target_spacing must lie within data.spacing_range_mm"):
        load_config(None, [f"data.target_spacing={spacing}".replace("inf", ".inf")])
