from __future__ import annotations

import math

import numpy as np
import pytest

from endofed.config import FederationConfig
from endofed.errors import ConfigError
from endofed.federated.privacy import (
    PrivacyLedger,
    check_privacy_plan,
    clip_update,
    epsilon_after,
    max_releases,
    noise_std,
    private_average,
    update_norm,
)


def _f32(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def test_an_update_of_norm_4_is_scaled_by_a_quarter_across_all_entries():
    update = {"a": _f32(2.0), "b": _f32(2.0, 2.0, 2.0)}  # sqrt(4 + 3 * 4) = 4
    clipped, norm = clip_update(update, 1.0)
    assert norm == pytest.approx(4.0)
    assert clipped["a"].tolist() == [0.5] and clipped["b"].tolist() == [0.5, 0.5, 0.5]
    assert clipped["a"].dtype == np.float32 and update_norm(clipped) == pytest.approx(1.0)
    assert update["a"].tolist() == [2.0]  # the input is not modified


def test_an_update_within_the_bound_or_zero_is_kept():
    clipped, norm = clip_update({"w": _f32(0.3, 0.4)}, 1.0)  # norm 0.5
    assert norm == pytest.approx(0.5) and clipped["w"].tolist() == _f32(0.3, 0.4).tolist()
    zero, norm = clip_update({"w": _f32(0.0, 0.0)}, 1.0)
    assert norm == 0.0 and zero["w"].tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="NaN or Inf"):
        clip_update({"w": _f32(math.nan)}, 1.0)
    with pytest.raises(ValueError, match="clipping_norm"):
        clip_update({"w": _f32(1.0)}, 0.0)


def test_noise_std_is_z_c_over_n():
    assert noise_std(1.0, 2.0, 4) == 0.5
    assert noise_std(0.8, 1.0, 2) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="sites"):
        noise_std(1.0, 1.0, 0)


def test_private_average_weighs_every_site_once_over_a_fixed_denominator():
    base = {"w": _f32(1.0, 1.0)}
    updates = [{"w": _f32(1.0, 0.0)}, {"w": _f32(0.0, 3.0)}]
    rng = np.random.default_rng(0)
    assert private_average(base, updates, 2, 0.0, rng)["w"].tolist() == [1.5, 2.5]
    # four sites asked, two updates kept: the two missing ones count as zero updates
    assert private_average(base, updates, 4, 0.0, rng)["w"].tolist() == [1.25, 1.75]
    with pytest.raises(ValueError, match="3 updates for a denominator of 2"):
        private_average(base, [*updates, updates[0]], 2, 0.0, rng)


def test_private_average_noise_has_the_asked_std_and_no_bias():
    base = {"w": np.zeros(200_000, dtype=np.float32), "b": np.full(3, 7.0, dtype=np.float32)}
    released = private_average(base, [], 3, 0.5, np.random.default_rng(1))
    noise = released["w"].astype(np.float64)
    assert released["w"].dtype == np.float32 and released["b"].shape == (3,)
    assert abs(noise.std() - 0.5) < 0.005 and abs(noise.mean()) < 0.005  # about 6 and 4.5 standard errors
    again = private_average(base, [], 3, 0.5, np.random.default_rng(1))
    assert np.array_equal(again["w"], released["w"])  # the generator is the only source of randomness


def _rdp_epsilon_by_hand(z: float, releases: int, delta: float) -> float:
    """RDP of a Gaussian: releases * a / (2 z^2); the conversion of Canonne et al. / Asoodeh et al."""
    orders = np.concatenate([np.linspace(1.1, 10.9, 99), np.arange(11, 64), [128, 256, 512, 1024]])
    rdp = releases * orders / (2 * z**2)
    eps = rdp + np.log1p(-1 / orders) - np.log(delta * orders) / (orders - 1)
    return float(max(0.0, eps.min()))


def _exact_gaussian_epsilon(z: float, releases: int, delta: float) -> float:
    """The exact epsilon of ``releases`` Gaussian releases (mu-GDP with mu = sqrt(T) / z), by bisection."""
    from scipy.stats import norm

    mu = math.sqrt(releases) / z

    def delta_of(eps: float) -> float:
        return float(norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * norm.cdf(-eps / mu - mu / 2))

    low, high = 0.0, 100.0
    for _ in range(200):
        middle = (low + high) / 2
        low, high = (middle, high) if delta_of(middle) > delta else (low, middle)
    return high


def test_epsilon_matches_dp_accounting_and_a_hand_computed_rdp_bound():
    from dp_accounting import dp_event, rdp

    accountant = rdp.RdpAccountant()
    accountant.compose(dp_event.GaussianDpEvent(1.0), 10)
    eps = epsilon_after(1.0, 10, 1e-5)
    assert eps == pytest.approx(accountant.get_epsilon(1e-5), rel=1e-12)
    assert eps == pytest.approx(_rdp_epsilon_by_hand(1.0, 10, 1e-5), rel=1e-9)
    assert eps == pytest.approx(19.0536, abs=1e-3)
    # RDP is an upper bound: above the exact epsilon, below the classic bound rdp + log(1/delta) / (a - 1)
    classic = min(10 * a / 2 + math.log(1e5) / (a - 1) for a in np.linspace(1.01, 50, 5000))
    assert _exact_gaussian_epsilon(1.0, 10, 1e-5) < eps < classic


def test_epsilon_grows_with_rounds_and_shrinks_with_noise():
    values = [epsilon_after(1.0, t, 1e-5) for t in range(0, 21)]
    assert values[0] == 0.0 and all(b > a for a, b in zip(values, values[1:], strict=False))
    assert epsilon_after(2.0, 10, 1e-5) < epsilon_after(1.0, 10, 1e-5)
    assert epsilon_after(1.0, 10, 1e-3) < epsilon_after(1.0, 10, 1e-5)
    with pytest.raises(ValueError, match="noise_multiplier"):
        epsilon_after(0.0, 1, 1e-5)


def test_max_releases_is_the_last_round_within_the_cap():
    cap = epsilon_after(1.0, 10, 1e-5)
    assert max_releases(1.0, 1e-5, cap) == 10
    assert max_releases(1.0, 1e-5, cap - 1e-9) == 9
    assert max_releases(1.0, 1e-5, epsilon_after(1.0, 1, 1e-5) / 2) == 0
    assert max_releases(5.0, 1e-5, epsilon_after(5.0, 300, 1e-5)) == 300


def test_ledger_counts_releases_and_refuses_the_one_beyond_the_cap():
    cap = epsilon_after(1.0, 2, 1e-5)
    ledger = PrivacyLedger(1.0, 1e-5, max_epsilon=cap)
    assert ledger.epsilon == 0.0 and not ledger.would_exceed()
    assert ledger.record_release() == pytest.approx(epsilon_after(1.0, 1, 1e-5))
    assert not ledger.would_exceed()
    ledger.record_release()
    assert ledger.would_exceed() and "2 releases" in ledger.exhausted_message()
    assert not PrivacyLedger(1.0, 1e-5, releases=1000).would_exceed()  # no cap


def test_ledger_state_round_trip_and_mismatch():
    ledger = PrivacyLedger(1.0, 1e-5, releases=7)
    restored = PrivacyLedger(1.0, 1e-5)
    restored.load_state_dict(ledger.state_dict())
    assert restored.releases == 7
    with pytest.raises(ValueError, match="noise_multiplier, delta"):
        PrivacyLedger(2.0, 1e-5).load_state_dict(ledger.state_dict())


def test_ledger_from_config():
    assert PrivacyLedger.from_config(FederationConfig()) is None
    fed = FederationConfig(dp_noise_multiplier=1.5, dp_clipping_norm=0.1, dp_delta=1e-6, dp_max_epsilon=8.0)
    assert PrivacyLedger.from_config(fed) == PrivacyLedger(1.5, 1e-6, 8.0, 0)


def test_privacy_plan():
    assert check_privacy_plan(FederationConfig(strategy="fedadam")) is None  # DP off
    dp = {"dp_noise_multiplier": 1.0, "dp_clipping_norm": 1.0}
    fed = FederationConfig(pretrain_rounds=6, finetune_rounds=4, **dp)
    assert check_privacy_plan(fed) == pytest.approx(epsilon_after(1.0, 10, 1e-5))
    with pytest.raises(ConfigError, match=r"federation.strategy in \('fedavg', 'fedprox'\), got 'fedadam'"):
        check_privacy_plan(FederationConfig(strategy="fedadam", **dp))
    with pytest.raises(ConfigError, match="finetune_strategy .* got 'trimmed_mean'"):
        check_privacy_plan(FederationConfig(finetune_strategy="trimmed_mean", **dp))
    # local fine-tuning releases nothing from the server: any fine-tuning strategy will do
    assert check_privacy_plan(FederationConfig(finetune_strategy="trimmed_mean", finetune_rounds=0, **dp))
    capped = FederationConfig(pretrain_rounds=6, finetune_rounds=4, dp_max_epsilon=epsilon_after(1.0, 7, 1e-5), **dp)
    with pytest.raises(ConfigError, match="too small for 10 rounds .* 7 rounds fit"):
        check_privacy_plan(capped)
