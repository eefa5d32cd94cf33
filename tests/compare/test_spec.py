from pathlib import Path

import pytest

from endofed.compare import arms
from endofed.compare.plots import plot_auc
from endofed.compare.report import result_table
from endofed.compare.runner import Context, plan_units, prepare, run_unit
from endofed.compare.spec import ARMS, DEFAULT_ARMS, CompareSpec, load_spec
from endofed.compare.units import UnitResult
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


def _plan(spec, sites):
    return [(u.name, u.arm, u.sites, u.fraction) for u in plan_units(spec, sites)]


def test_plan_of_every_arm_names_and_orders_the_unit_folders():
    spec = CompareSpec(arms=tuple(reversed(ARMS)), label_fractions=(0.5,))  # the YAML's order does not matter
    assert _plan(spec, ["a", "b", "c"]) == [
        ("seed0/scratch/a", "scratch", ("a",), 1.0),
        ("seed0/scratch/b", "scratch", ("b",), 1.0),
        ("seed0/scratch/c", "scratch", ("c",), 1.0),
        ("seed0/local_ssl/a", "local_ssl", ("a",), 1.0),
        ("seed0/local_ssl/b", "local_ssl", ("b",), 1.0),
        ("seed0/local_ssl/c", "local_ssl", ("c",), 1.0),
        ("seed0/federation", "fed_ssl_fedprox", ("a", "b", "c"), 1.0),
        ("seed0/fed_ssl/a", "fed_ssl", ("a",), 1.0),
        ("seed0/fed_ssl/b", "fed_ssl", ("b",), 1.0),
        ("seed0/fed_ssl/c", "fed_ssl", ("c",), 1.0),
        ("seed0/pooled", "pooled", ("a", "b", "c"), 1.0),
        ("seed0/loso/federation_without_a", "loso_federation", ("b", "c"), 1.0),
        ("seed0/loso/a", "loso", ("a",), 1.0),
        ("seed0/loso/federation_without_b", "loso_federation", ("a", "c"), 1.0),
        ("seed0/loso/b", "loso", ("b",), 1.0),
        ("seed0/loso/federation_without_c", "loso_federation", ("a", "b"), 1.0),
        ("seed0/loso/c", "loso", ("c",), 1.0),
        ("seed0/labels050/scratch/a", "scratch", ("a",), 0.5),
        ("seed0/labels050/scratch/b", "scratch", ("b",), 0.5),
        ("seed0/labels050/scratch/c", "scratch", ("c",), 0.5),
        ("seed0/labels050/fed_ssl/a", "fed_ssl", ("a",), 0.5),
        ("seed0/labels050/fed_ssl/b", "fed_ssl", ("b",), 0.5),
        ("seed0/labels050/fed_ssl/c", "fed_ssl", ("c",), 0.5),
    ]


def test_the_federation_is_planned_once_for_either_federated_arm():
    only_fedprox = _plan(CompareSpec(arms=("fed_ssl_fedprox",), label_fractions=()), ["a"])
    assert only_fedprox == [("seed0/federation", "fed_ssl_fedprox", ("a",), 1.0)]
    both = [u[0] for u in _plan(CompareSpec(arms=("fed_ssl_fedprox", "fed_ssl"), label_fractions=(0.25,)), ["a"])]
    assert both == ["seed0/federation", "seed0/fed_ssl/a", "seed0/labels025/fed_ssl/a"]


def test_registry_records_are_complete_and_distinct():
    registry = arms.selected()
    assert ARMS == tuple(a.name for a in registry) and DEFAULT_ARMS == CompareSpec().arms
    assert "loso" in ARMS and "loso" not in DEFAULT_ARMS
    assert len({a.colour for a in registry}) == len(registry) and all(a.title for a in registry)
    assert all(baseline in ARMS for a in registry for baseline, _ in a.questions)
    assert arms.BASELINE in ARMS and arms.get_arm("pooled").title.startswith("pooled")
    assert [a.name for a in arms.selected(["pooled", "nope", "scratch"])] == ["scratch", "pooled"]
    with pytest.raises(KeyError, match="unknown arm 'nope'"):
        arms.get_arm("nope")


def test_an_arm_with_too_few_sites_is_refused_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError, match="arm 'loso' needs at least 3 sites, got 2"):
        prepare(
            CompareSpec(arms=("scratch", "loso")), [tmp_path / "a.yaml", tmp_path / "b.yaml"], tmp_path, ROOT, False
        )


def test_a_federation_of_fewer_sites_gets_its_own_config(tmp_path):
    spec = CompareSpec(config=ROOT / "configs" / "tiny.yaml")
    (tmp_path / "configs").mkdir()
    ctx = Context(spec, [object(), object(), object()], tmp_path, ROOT, {})  # type: ignore[list-item]
    assert ctx.config_yaml(0, 3) == tmp_path / "configs" / "seed0.yaml"
    path = ctx.config_yaml(0, 2)
    assert path == tmp_path / "configs" / "seed0_2sites.yaml"
    assert "min_sites: 2" in path.read_text()


def test_a_new_arm_is_one_registry_entry(monkeypatch, tmp_path):
    ran = []

    def run(ctx, unit, on_start=None):
        ran.append(unit.name)
        return UnitResult("?", "?", unit.seed, 0.0, {"a": [{"subject": "a1", "label": 1, "prob": 0.9}]})

    seventh = arms.Arm("seventh", "a seventh arm", "#17becf", arms.get_arm("scratch").planner, run,
                       questions=(("scratch", "The seventh arm vs scratch"),))  # fmt: skip
    monkeypatch.setattr(arms, "REGISTRY", (*arms.REGISTRY, seventh))
    spec = CompareSpec(arms=("scratch", "seventh"), label_fractions=())
    units = plan_units(spec, ["a"])
    assert [u.name for u in units] == ["seed0/scratch/a", "seed0/seventh/a"]
    result = run_unit(Context(spec, [], tmp_path, ROOT, {}), units[1])
    assert ran == ["seed0/seventh/a"] and (result.name, result.arm, result.fraction) == (
        "seed0/seventh/a",
        "seventh",
        1.0,
    )
    row = {"site": "a", "arm": "seventh", "label_fraction": 1.0, "seeds": 1, "n_test": 1, "n_test_positive": 1}
    row |= {
        f"{m}_{k}": 0.5
        for m in ("auc", "balanced_accuracy", "sensitivity", "specificity", "ece")
        for k in ("mean", "sd", "low", "high")
    }
    assert result_table([row], spec.arms)[-1].startswith("| a (1 test, 1 pos.) | seventh | 0.500 [0.500, 0.500] |")
    assert plot_auc([row], spec.arms, tmp_path / "auc.png").stat().st_size > 1000
