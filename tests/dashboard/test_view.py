"""The dashboard's pure functions, with hand-computed expectations (no process, no network)."""

from __future__ import annotations

import pytest

from endofed.dashboard import safe, superlink, view
from endofed.dashboard.app import check_binding, is_loopback, token_matches
from endofed.dashboard.passports import passport_view

A, B = 111, 222  # node ids
RECORDS = [
    {"event": "train", "phase": "pretrain", "round": 1, "aggregated": True, "failures": 0, "round_seconds": 2.0,
     "rejected": [], "failed": [],
     "sites": [{"node": A, "partition-id": 0.0, "num-examples": 10.0, "train-loss": 1.0, "bytes_down": 1000,
                "bytes_up": 500, "update_norm_ratio": 0.5},
               {"node": B, "partition-id": 1.0, "num-examples": 20.0, "train-loss": 3.0, "bytes_down": 1000,
                "bytes_up": 500, "update_norm_ratio": 0.25}]},
    {"event": "privacy", "phase": "pretrain", "round": 1, "released": True, "epsilon": 4.25, "delta": 1e-5,
     "clipped_sites": 1, "update_norms": [0.1, 0.9], "noise_multiplier": 1.1},
    {"event": "train", "phase": "pretrain", "round": 2, "aggregated": True, "failures": 1,
     "rejected": [{"node": B, "reason": "<script>x</script> loss NaN from /data/site_b/subj-7.nii"}],
     "failed": [{"node": A, "code": 106, "reason": "refused"}],
     "sites": [{"node": A, "partition-id": 0.0, "num-examples": 10.0, "train-loss": 0.5, "bytes_down": 2000,
                "bytes_up": 1500}]},
]  # fmt: skip


def test_safe_text_redacts_paths_cuts_and_flattens():
    assert safe.redact_paths("no /a/b.nii here") == "no [path] here"
    assert safe.redact_paths(r"C:\x\y and ~/z and ./w") == "[path] and [path] and [path]"
    assert safe.redact_paths("loss 0.5 and a/b ratio") == "loss 0.5 and a/b ratio"  # no leading slash: not a path
    assert safe.redact_paths("error:/site/x.nii, <img src=/x>") == "error:[path], <img src=[path]>"
    assert safe.safe_text("abcdef", limit=4) == "abc…"
    assert safe.safe_text("a\nb\x00c") == "a b c"
    with pytest.raises(ValueError, match="limit"):
        safe.safe_text("x", limit=0)


def test_number_formats():
    assert view.fmt_bytes(2578176) == "2.58 MB"
    assert view.fmt_bytes(512) == "512 B"
    assert view.fmt_bytes(1500) == "1.50 kB"
    assert view.fmt_bytes(None) == "-"
    assert view.fmt_number(0.12345) == "0.123"
    assert view.fmt_number(float("nan")) == "-"
    assert view.fmt_number(True) == "-"


def test_site_keys_and_default_names():
    partitions = view.node_partitions(RECORDS)
    assert partitions == {"111": 0, "222": 1}
    assert view.site_key({"node": B}, partitions) == "partition-1"  # a rejected entry has no partition id
    assert view.site_key({"node": 999}, partitions) == "node-999"
    assert view.default_name("partition-2") == "site 2"
    assert view.default_name("node-12345678901") == "node 12345678…"


def test_run_status():
    assert view.run_status([], None, None).state == "waiting"
    live = view.run_status(RECORDS, None, 5.0)
    assert (live.state, live.phase, live.round) == ("running", "pretrain", 2)
    assert live.completed == {"pretrain": 2, "finetune": 0}
    assert view.run_status(RECORDS, None, 1200.0).message.startswith("no new round for 20 min")
    assert view.run_status(RECORDS, {"sites": {}}, 1e9).state == "finished"


def test_site_rows_hold_last_values_totals_and_escaped_cut_reasons():
    summary = {"sites": {str(B): {"auc": 0.75, "partition-id": 1.0}}}
    rows = view.site_rows(RECORDS, summary, {"partition-0": "alpha", "partition-1": "beta"}, {"111": True})
    alpha, beta = rows
    assert (alpha.name, alpha.last_round, alpha.volumes, alpha.loss) == ("alpha", "pretrain 2", "10", "0.5000")
    assert (alpha.bytes_down, alpha.bytes_up) == ("3.00 kB", "2.00 kB")  # 1000 + 2000, 500 + 1500
    assert (alpha.failed, alpha.reason, alpha.connected) == (1, "failed (106): refused", "yes")
    assert (beta.last_round, beta.rejected, beta.auc, beta.connected) == ("pretrain 1", 1, "0.750", "unknown")
    assert beta.reason == "<script>x<[path]> loss NaN from [path]"  # over-eager is fine; escaping: the template
    assert beta.norm_ratio == "0.2500"


def test_timeline_merges_train_and_privacy():
    first, second = view.timeline(RECORDS)
    assert (first.phase, first.round, first.trained) == ("pretrain", 1, 2)
    assert (first.mean_loss, first.epsilon) == ("2.0000", "4.250")  # (1.0 + 3.0) / 2
    assert (second.trained, second.failures, second.rejected, second.epsilon) == (1, 1, 1, "-")


def test_privacy_loss_and_bytes_series():
    (row,) = view.privacy_rows(RECORDS)
    assert row == {"phase": "pretrain", "round": "1", "epsilon": "4.250", "delta": "1e-05", "released": "yes",
                   "clipped": "1 of 2", "noise": "1.10"}  # fmt: skip
    series = view.loss_series(RECORDS, {"partition-0": "alpha"})
    assert series == {"pretrain": {"alpha": [(1, 1.0), (2, 0.5)], "site 1": [(1, 3.0)]}}
    assert view.bytes_series(RECORDS) == [("pretrain 1", 2000.0, 1000.0), ("pretrain 2", 2000.0, 1500.0)]


def test_passport_view_shows_aggregates_only():
    shown = passport_view({
        "site_id": "alpha", "ready": True, "cases": {"total": 8, "labelled": 6, "note": "/secret/path"},
        "modalities": {"t2": {"present": 8, "missing": 0, "orientations": {"LAS": 5, "PSR": 3}}},
        "duplicates": 1, "near_duplicates": 0, "content_duplicates": 2, "failures": {"unreadable": 1},
        "created_utc": "2026-01-01T00:00:00Z", "extra": "/data/site/subject-1",
    })  # fmt: skip
    rows = dict(shown.rows)
    assert (shown.site, shown.ready) == ("alpha", "True")
    assert rows["cases"] == "total 8, labelled 6"  # the string field is dropped: numbers only
    assert rows["t2"] == "8 present, 0 missing; orientations LAS 5, PSR 3"
    assert rows["duplicates"] == "duplicates 1, near_duplicates 0, content_duplicates 2"
    assert "extra" not in rows and all("/" not in v for v in rows.values() if not v.startswith("20"))


def test_binding_and_token_rules():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.0.0.2")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("example.org")
    check_binding("127.0.0.1", "")
    check_binding("0.0.0.0", "s3cret")
    with pytest.raises(ValueError, match="0.0.0.0"):
        check_binding("0.0.0.0", "")
    assert token_matches("", "anything") and token_matches("abc", "abc")
    assert not token_matches("abc", "") and not token_matches("abc", "abd")


def test_node_online_needs_status_and_a_live_heartbeat():
    assert superlink.is_online("online", "100.5", now=100.0)
    assert not superlink.is_online("online", "99.0", now=100.0)
    assert not superlink.is_online("offline", "200", now=100.0)
    assert not superlink.is_online("online", "None", now=100.0)


def test_deployed_sites_are_named_by_their_key_file_openssh_against_the_superlinks_pem(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from endofed.dashboard.sources import key_names
    from endofed.dashboard.superlink import NodeInfo

    keys = {name: ec.generate_private_key(ec.SECP384R1()).public_key() for name in ("hospital_a", "hospital_b")}
    files = []
    for name, key in keys.items():  # what endofed certs writes: OpenSSH public keys
        path = tmp_path / f"{name}.pub"
        path.write_bytes(key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH))
        files.append(str(path))
    pem = {name: key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
           for name, key in keys.items()}  # fmt: skip
    nodes = [NodeInfo("7", True, pem["hospital_b"]), NodeInfo("9", True, pem["hospital_a"]),
             NodeInfo("11", True, b"not a key")]  # fmt: skip
    assert key_names({"server": {"site_public_keys": files}}, nodes) == {"node-7": "hospital_b", "node-9": "hospital_a"}


def test_node_ids_from_the_superlink_database_are_unsigned():
    from endofed.dashboard.superlink import unsigned_node_id

    assert unsigned_node_id(-6424379806806493230) == "12022364266903058386"  # seen in a real deployment run
    assert unsigned_node_id(2858003794470738848) == "2858003794470738848"
    assert unsigned_node_id("x") == "x"
