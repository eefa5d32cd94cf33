from __future__ import annotations

import json

import pytest

from endofed.federated.audit import append_audit, audit_outgoing
from endofed.federated.protocol import OUTGOING_FILE

ALLOWED = {"blocks.0.attn.qkv.weight": (96, 32), "norm.weight": (32,)}


def test_encoder_arrays_and_numbers_pass_with_a_record():
    record = audit_outgoing(dict(ALLOWED), {"num-examples": 8, "train-loss": 0.5, "auc": [0.7]}, 0, ALLOWED)
    assert record == {"arrays": 2, "array_values": 96 * 32 + 32, "metrics": ["auc", "num-examples", "train-loss"]}
    assert audit_outgoing({}, {"auc": 0.5}, 0, ALLOWED)["arrays"] == 0  # evaluation replies: numbers only


@pytest.mark.parametrize(
    ("arrays", "metrics", "others", "message"),
    [
        ({**ALLOWED, "decoder.pred.weight": (10, 2)}, {}, 0, "arrays beyond the shared encoder"),
        ({"norm.weight": (32,)}, {}, 0, "missing ['blocks.0.attn.qkv.weight']"),
        ({**ALLOWED, "norm.weight": (2, 64, 64, 16)}, {}, 0, "unexpected shapes"),
        (dict(ALLOWED), {"site": "/data/sub-001/T2.nii.gz"}, 0, "only numbers may leave the site"),
        (dict(ALLOWED), {"flag": True}, 0, "only numbers may leave the site"),
        (dict(ALLOWED), {}, 1, "extra record"),
    ],
)
def test_anything_else_is_refused(arrays, metrics, others, message):
    with pytest.raises(ValueError, match="refusing to send") as info:
        audit_outgoing(arrays, metrics, others, ALLOWED)
    assert message in str(info.value)


def test_audit_log_appends_json_lines(tmp_path):
    append_audit(tmp_path, {"message": "train", "arrays": 2})
    append_audit(tmp_path, {"message": "evaluate", "arrays": 0})
    lines = (tmp_path / OUTGOING_FILE).read_text().splitlines()
    assert [json.loads(line)["message"] for line in lines] == ["train", "evaluate"]
