"""The label-efficiency table of the compare report: AUC per arm and the paired gain at each label fraction."""

from __future__ import annotations

from endofed.compare.report import _label_table
from endofed.compare.tables import ALL_SITES


def _row(arm: str, fraction: float, auc: float, gain: tuple[float, float, float, float] | None = None) -> dict:
    row = {"site": ALL_SITES, "arm": arm, "label_fraction": fraction, "seeds": 3,
           "auc_mean": auc, "auc_sd": 0.01, "auc_low": auc - 0.05, "auc_high": auc + 0.05}  # fmt: skip
    if gain is not None:
        row |= dict(zip(("auc_gain", "auc_gain_low", "auc_gain_high", "auc_gain_p"), gain, strict=True))
    return row


def test_label_table_has_one_row_per_fraction_with_the_paired_gain_over_scratch() -> None:
    summary = [
        _row("scratch", 0.5, 0.600),
        _row("fed_ssl", 0.5, 0.650, (0.050, 0.010, 0.090, 0.02)),
        _row("scratch", 1.0, 0.700),
        _row("fed_ssl", 1.0, 0.710, (0.010, -0.020, 0.040, 0.4)),
        _row("pooled", 1.0, 0.800, (0.100, 0.050, 0.150, 0.0)),  # not a label-efficiency arm: not in the table
        {**_row("fed_ssl", 0.5, 0.9), "site": "site_a"},  # per-site rows stay out of the all-sites table
    ]
    lines = _label_table(summary)
    assert lines[0] == "## Label efficiency (all sites, test AUC)"
    header, rule, half, full = lines[2:6]
    assert header.count("|") == 5 and "fed_ssl - scratch (paired)" in header and "pooled" not in header
    assert rule == "|---|---|---|---|"
    expected = "| 50% | 0.600 ± 0.010 [0.550, 0.650] | 0.650 ± 0.010 [0.600, 0.700] | +0.050 [+0.010, +0.090], p=0.02 |"
    assert half == expected
    assert full.startswith("| 100% | 0.700 ") and full.endswith("| +0.010 [-0.020, +0.040], p=0.40 |")
    assert lines[6:] == [""]


def test_label_table_is_empty_with_a_single_fraction() -> None:
    assert _label_table([_row("scratch", 1.0, 0.7), _row("fed_ssl", 1.0, 0.7, (0.0, -0.1, 0.1, 1.0))]) == []
