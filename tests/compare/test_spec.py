from pathlib import Path

import pytest

from endofed.compare.runner import plan_units
from endofed.compare.spec import ARMS, CompareSpec, load_spec
from endofed.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_experiments_load_and_resolve_paths():
    for name in ("demo.yaml", "full.yaml"):
        spec = load_spec(ROOT / "configs" / "experiments" / name)
        assert spec.config.is_file() and set(spec.arms) <= set(ARMS)
        cfg = spec.experiment_config(spec.seeds[0], 3)
        assert cfg.federation.pretrain_rounds * cfg.federation.local_epochs == cfg.pretrain.epochs
        assert cfg.federation.finetune_rounds * cfg.federation.local_epochs == cfg.finetune.epochs


def test_budgets_become_config_overrides(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(
        f"config: {ROOT / 'configs' / 'tiny.yaml'}\npretrain_epochs: 6\nfinetune_epochs: 4\nlocal_epochs: 2\n"
    )
    spec = load_spec(path, {"seeds": (3,)})
    cfg = spec.experiment_config(3, n_sites=2)
    assert (cfg.seed, cfg.finetune.split_seed, cfg.pretrain.epochs, cfg.finetune.epochs) == (3, 0, 6, 4)
    fed = cfg.federation
    assert (fed.pretrain_rounds, fed.finetune_rounds, fed.local_epochs, fed.min_sites) == (3, 2, 2, 2)
    assert (fed.strategy, fed.finetune_strategy) == ("fedavg", "fedprox")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("arms: [scratch, magic]", "arms must be distinct names"),
        ("seeds: []", "seeds must be distinct"),
        ("pretrain_epochs: 5\nlocal_epochs: 2", "must be a multiple of local_epochs"),
        ("label_fractions: [1.0]", "label_fractions must lie in"),
        ("seedz: [1]", "did you mean 'seeds'"),
        ("bootstrap: many", "must be an integer"),
    ],
)
def test_bad_experiments_name_the_cause(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError, match=message):
        load_spec(path)


def test_plan_orders_inputs_first_and_covers_every_arm():
    spec = CompareSpec(seeds=(0, 1), label_fractions=(0.5,))
    units = plan_units(spec, ["a", "b"])
    names = [u.name for u in units]
    assert len(names) == len(set(names))
    per_seed = 2 + 2 + 1 + 2 + 1 + 2 * 2  # scratch, local_ssl, federation, fed_ssl, pooled, labels (2 arms)
    assert len(units) == 2 * per_seed
    for seed in (0, 1):
        federation = names.index(f"seed{seed}/federation")
        fed_ssl = [i for i, u in enumerate(units) if u.arm == "fed_ssl" and u.seed == seed]
        assert fed_ssl and min(fed_ssl) > federation  # fed_ssl fine-tunes the federation's encoder
    assert {u.fraction for u in units} == {1.0, 0.5}
    assert next(u for u in units if u.name == "seed0/pooled").sites == ("a", "b")


def test_plan_without_federated_arms_has_no_federation():
    units = plan_units(CompareSpec(arms=("scratch", "pooled"), label_fractions=()), ["a"])
    assert [u.name for u in units] == ["seed0/scratch/a", "seed0/pooled"]


def test_plan_leave_one_site_out_federates_the_others_first():
    units = plan_units(CompareSpec(arms=("loso",), label_fractions=()), ["a", "b", "c"])
    assert [(u.name, u.arm, u.sites) for u in units[:2]] == [
        ("seed0/loso/federation_without_a", "loso_federation", ("b", "c")),
        ("seed0/loso/a", "loso", ("a",)),
    ]
    assert len(units) == 6
