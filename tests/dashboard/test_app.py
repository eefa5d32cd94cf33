"""The dashboard app over a hand-written run folder (FastAPI TestClient: no process, no network)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from endofed.dashboard.app import DashboardSettings, create_app

HOSTILE = "<script>alert(1)</script> from /srv/hospital/secret/subject-0042.nii " + "x" * 400


@pytest.fixture()
def live_run(tmp_path: Path) -> Path:
    """A run folder mid-way: one pretrain round landed, one site rejected with a hostile reason, no summary."""
    record = {
        "event": "train", "phase": "pretrain", "round": 1, "aggregated": True, "failures": 0, "round_seconds": 1.5,
        "sites": [{"node": 7, "num-examples": 12.0, "train-loss": 0.9, "bytes_down": 10, "bytes_up": 10}],
        "rejected": [{"node": 8, "reason": HOSTILE}], "failed": [],
    }  # fmt: skip
    (tmp_path / "rounds.jsonl").write_text(json.dumps(record) + "\n" + '{"event": "tra')  # a line being written
    return tmp_path


def test_a_live_run_page_refreshes_and_escapes_what_a_site_sent(live_run: Path):
    client = TestClient(create_app(DashboardSettings(live_run, refresh_s=3)))
    page = client.get("/")
    assert page.status_code == 200
    assert '<meta http-equiv="refresh" content="3">' in page.text
    assert "running: pretrain round 1" in page.text and "node 7" in page.text and "node 8" in page.text
    assert "<script>alert" not in page.text and "&lt;script&gt;alert(1)&lt;" in page.text
    assert "/srv/hospital" not in page.text and "subject-0042" not in page.text and "x" * 200 not in page.text
    assert "no data passports in this run folder" in page.text
    assert client.get("/status.json").json()["state"] == "running"
    for plot in ("/plots/loss.svg", "/plots/bytes.svg"):
        reply = client.get(plot)
        assert reply.status_code == 200 and reply.headers["content-type"] == "image/svg+xml"
        assert reply.content.lstrip().startswith(b"<?xml") and b"<svg" in reply.content


def test_an_empty_folder_waits_for_the_first_round(tmp_path: Path):
    page = TestClient(create_app(DashboardSettings(tmp_path))).get("/")
    assert page.status_code == 200 and "waiting for the first round" in page.text


def test_every_route_checks_the_token(live_run: Path):
    client = TestClient(create_app(DashboardSettings(live_run, token="s3cret")))
    for route in ("/", "/status.json", "/plots/loss.svg", "/plots/bytes.svg", "/docs", "/openapi.json"):
        assert client.get(route).status_code == 401, route
        assert client.get(route, params={"token": "wrong"}).status_code == 401, route
    assert client.get("/status.json", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    first = client.get("/", params={"token": "s3cret"})
    assert first.status_code == 200 and "s3cret" not in first.text
    assert client.get("/plots/loss.svg").status_code == 200  # the cookie the first page set
